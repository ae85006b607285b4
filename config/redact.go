package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Redacted is what a support bundle or a commissioning report may show
// of the config the agent runs with, defaults applied, keyed as in the
// file: every key but those that could hold a secret (a user name, or
// anything called password, secret or token), whose values are replaced
// by "<redacted>". Files the config names (keys, the password file) are
// given by path only; their contents are never read here.
func (c *Config) Redacted() (map[string]any, error) {
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	redact(m)
	return m, nil
}

// redact replaces the values of secret-looking keys, at any depth.
func redact(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if secretKey(k) {
				if s, ok := val.(string); !ok || s != "" {
					x[k] = "<redacted>"
				}
				continue
			}
			redact(val)
		}
	case []any:
		for _, e := range x {
			redact(e)
		}
	}
}

func secretKey(k string) bool {
	k = strings.ToLower(k)
	if strings.HasSuffix(k, "_file") {
		return false // a path: the file's contents are the secret
	}
	return k == "username" || strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}
