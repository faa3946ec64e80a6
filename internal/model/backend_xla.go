//go:build xla

package model

import _ "github.com/gomlx/gomlx/backends/xla"
