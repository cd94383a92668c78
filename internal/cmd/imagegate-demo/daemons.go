package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/imagegate/imagegate/internal/lab"
	"github.com/imagegate/imagegate/internal/registrytest"
)

// The demo starts its daemons as imagegate's tests do: dockerd through
// tests/testenv (StartDockerdErr), and imagegate's registry through
// pkg/registry/registrytest (Serve).

// serverRegistry is imagegate's registry served in this process, with TLS
// from a CA made for it and one write user, logging to <dir>/<name>.log.
type serverRegistry struct {
	*registrytest.Registry
	log *os.File
}

func startRegistry(name, dir string) (*serverRegistry, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	rg, err := registrytest.Serve(filepath.Join(dir, name), log)
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("starting the %s: %w", name, err)
	}
	return &serverRegistry{Registry: rg, log: log}, nil
}

// lab is the registry as the jobs' variables describe it.
func (rg *serverRegistry) lab() lab.Registry {
	return lab.Registry{Host: "127.0.0.1", Port: rg.Port, Username: rg.Username, Password: rg.Password, CA: string(rg.CAPEM)}
}

func (rg *serverRegistry) stop() {
	if rg != nil {
		rg.Close()
		rg.log.Close()
	}
}
