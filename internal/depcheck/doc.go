// Package depcheck holds, in its test, the rules of imagegate's package
// layers: which packages may import which (docs/architecture.md draws
// them), what each shipped binary may link (BuildKit only in
// docker_image_build and container_image_build, no go-containerregistry remote client in
// buildset_registry, no package testing in any module or service), and
// that a module calls one package. It has no code; go-containerregistry's
// pkg/registry/depcheck_test.go is the model.
package depcheck
