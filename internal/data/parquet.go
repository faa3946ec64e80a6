package data

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"

	"github.com/parquet-go/parquet-go"

	"github.com/cyclealign/cyclealign/internal/files"
)

// parquetMessage is a chat message as `datasets` writes it: list<struct<content, role>>.
type parquetMessage struct {
	Role    *string `parquet:"role,optional" json:"role"`
	Content *string `parquet:"content,optional" json:"content"`
}

// eachParquetRow calls fn with each row of a Parquet file as a JSON object of its text
// columns, its lists of messages and its lists of texts (what the accepted formats hold), read
// through a row type built from the file's own schema; other columns are left out.
func eachParquetRow(path string, fn func(rec []byte, where string) error) error {
	f, err := files.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		return fmt.Errorf("%s: not a Parquet file: %w", path, err)
	}
	var fields []reflect.StructField
	for i, fd := range pf.Schema().Fields() {
		var typ reflect.Type
		tag := fd.Name() + ",optional"
		switch {
		case fd.Leaf() && fd.Type().Kind() == parquet.ByteArray:
			typ = reflect.TypeFor[*string]()
		case !fd.Leaf() && len(fd.Fields()) == 1 && len(fd.Fields()[0].Fields()) == 1:
			tag += ",list"
			if fd.Fields()[0].Fields()[0].Leaf() {
				typ = reflect.TypeFor[[]*string]()
			} else {
				typ = reflect.TypeFor[[]parquetMessage]()
			}
		default:
			continue
		}
		fields = append(fields, reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: typ,
			Tag: reflect.StructTag(fmt.Sprintf(`parquet:%q json:%q`, tag, fd.Name()+",omitempty"))})
	}
	rowType := reflect.StructOf(fields)
	r := parquet.NewReader(pf, parquet.SchemaOf(reflect.New(rowType).Interface()))
	defer r.Close()
	for n := 1; ; n++ {
		v := reflect.New(rowType)
		if err := r.Read(v.Interface()); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("%s: row %d: %w", path, n, err)
		}
		rec, err := json.Marshal(v.Interface())
		if err != nil {
			return fmt.Errorf("%s: row %d: %w", path, n, err)
		}
		if err := fn(rec, fmt.Sprintf("row %d", n)); err != nil {
			return fmt.Errorf("%s: row %d: %w", path, n, err)
		}
	}
}
