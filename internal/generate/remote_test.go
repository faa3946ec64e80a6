package generate

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cyclealign/cyclealign/internal/openaiapi"
)

// A generation server's reply that is not n distinct texts is refused with an error naming the
// server: null texts (journaled as empty candidates, then blamed on the black-box), duplicate
// indexes, indexes out of range.
func TestRemoteRefusesMalformedChoices(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`{"choices":[{"index":0,"text":null},{"index":1,"text":"b"}]}`, "choice 0 has no text"},
		{`{"choices":[{"index":0},{"index":1,"text":"b"}]}`, "choice 0 has no text"},
		{`{"choices":[{"index":0,"text":"a"},{"index":0,"text":"b"}]}`, "choice index 0 appears twice"},
		{`{"choices":[{"index":0,"text":"a"},{"index":2,"text":"b"}]}`, "choice index 2 for n=2"},
		{`{"choices":[{"index":0,"text":"a"}]}`, "1 choices for n=2"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(c.body)) }))
		r := &Remote{Client: openaiapi.New(openaiapi.Options{URL: srv.URL + "/v1", MaxAttempts: 1})}
		_, _, err := r.Text(context.Background(), "m", [][]int{{1, 2}}, Options{N: 2, MaxNewTokens: 4, TopP: 1, Temperature: 1})
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "generation server: POST "+srv.URL+"/v1/completions") {
			t.Errorf("%s: %v, want %q naming the server", c.body, err, c.want)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"choices":[{"index":1,"text":"b","finish_reason":"stop"},{"index":0,"text":"","finish_reason":"length"}],"usage":{"completion_tokens":3}}`))
	}))
	defer srv.Close()
	got, tokens, err := (&Remote{Client: openaiapi.New(openaiapi.Options{URL: srv.URL + "/v1"})}).Text(context.Background(), "m", [][]int{{1}}, Options{N: 2, MaxNewTokens: 4, TopP: 1, Temperature: 1})
	if err != nil || tokens != 3 || got[0][0].Text != "" || got[0][1].Text != "b" || got[0][0].FinishReason != "length" {
		t.Fatalf("a well-formed reply (an empty text is a text): %+v %d %v", got, tokens, err)
	}
}

// A server that sends headers and then stalls with the body short of its Content-Length fails
// the request after Timeout (the default client waited 10 minutes).
func TestRemoteTimeoutCoversAStalledBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 4096)
				conn.Read(buf)
				conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"choices\":"))
				time.Sleep(20 * time.Second)
				conn.Close()
			}()
		}
	}()
	r := &Remote{Client: openaiapi.New(openaiapi.Options{URL: "http://" + ln.Addr().String() + "/v1", Timeout: 300 * time.Millisecond, MaxAttempts: 1})}
	start := time.Now()
	_, _, err = r.Text(context.Background(), "m", [][]int{{1}}, Options{N: 1, MaxNewTokens: 4, TopP: 1, Temperature: 1})
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("stalled body: %v after %v", err, time.Since(start))
	}
}
