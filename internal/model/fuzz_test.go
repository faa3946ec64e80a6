package model

import (
	"math"
	"testing"
)

// FuzzAdapterConfig: any adapter_config.json either is refused or gives a configuration whose
// rank and scale are within the bounds that size the adapter's allocations.
func FuzzAdapterConfig(f *testing.F) {
	f.Add([]byte(`{"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"}`), 16)
	f.Add([]byte(`{"r": 100000000, "lora_alpha": 16, "target_modules": ["q"]}`), 0)
	f.Add([]byte(`{"r": 8, "lora_alpha": 1e39, "target_modules": ["q"]}`), 64)
	f.Add([]byte(`{"r": -1, "lora_alpha": 1, "target_modules": "all-linear"}`), 16)
	f.Add([]byte(`{"r": 4, "lora_alpha": 8, "target_modules": [], "use_rslora": true}`), 16)
	f.Fuzz(func(t *testing.T, b []byte, maxRank int) {
		cfg, err := ParseAdapterConfig(b, maxRank)
		if err != nil {
			return
		}
		scale := cfg.Alpha / float64(cfg.R)
		if cfg.R < 1 || (maxRank > 0 && cfg.R > maxRank) || math.IsNaN(scale) || math.IsInf(scale, 0) || scale < 0 || scale > MaxLoRAScale ||
			cfg.Dropout < 0 || cfg.Dropout >= 1 || len(cfg.Targets) == 0 {
			t.Fatalf("accepted %+v from %q (max rank %d)", cfg, b, maxRank)
		}
	})
}
