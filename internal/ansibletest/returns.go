package ansibletest

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/ansible"
)

// returnDoc is one documented return value.
type returnDoc struct {
	Type     string               `yaml:"type"`
	Elements string               `yaml:"elements"`
	Returned string               `yaml:"returned"`
	Contains map[string]returnDoc `yaml:"contains"`
}

// CheckReturn fails t when the RETURN documentation of the sidecar at path
// and the keys the module returns disagree: a documented key the module
// never returns, a returned key that is not documented, or a documented
// type that is not the key's. run is the module's body (the function its
// main passes to ansible.Main); the keys are those of the result type it
// returns (ansible.ResultKeys), so the comparison holds for every path
// through the module. Where a key's value is a struct or a list of structs,
// its contains are compared the same way.
func CheckReturn(t testing.TB, path string, run any) {
	t.Helper()
	sc, err := LoadSidecar(path)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]returnDoc{}
	for k, n := range sc.Return {
		var d returnDoc
		if err := n.Decode(&d); err != nil {
			t.Fatalf("%s: RETURN.%s: %v", path, k, err)
		}
		docs[k] = d
	}
	ft := reflect.TypeOf(run)
	if ft == nil || ft.Kind() != reflect.Func || ft.NumOut() != 2 {
		t.Fatalf("CheckReturn: run is %T, not a module body", run)
	}
	rt := ft.Out(0)
	if _, err := ansible.ResultKeys(rt); err != nil {
		t.Fatalf("CheckReturn: the module returns %s: %v", rt, err)
	}
	for _, p := range compareReturn("", fieldsOf(rt), docs) {
		t.Errorf("%s: %s", path, p)
	}
}

// fieldsOf returns the json fields of a struct type (a pointer is
// followed) with their types, as encoding/json marshals it.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			for et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for k, v := range fieldsOf(et) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// returnType is the RETURN type of a Go type as encoding/json renders it,
// and the struct type whose fields a contains describes (nil if none).
func returnType(t reflect.Type) (typ, elements string, inner reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) ||
		t.Implements(textMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return "str", "", nil
	}
	switch t.Kind() {
	case reflect.String:
		return "str", "", nil
	case reflect.Bool:
		return "bool", "", nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int", "", nil
	case reflect.Float32, reflect.Float64:
		return "float", "", nil
	case reflect.Slice, reflect.Array:
		et, _, ein := returnType(t.Elem())
		return "list", et, ein
	case reflect.Map:
		return "dict", "", nil
	case reflect.Struct:
		return "dict", "", t
	}
	return "raw", "", nil
}

func compareReturn(prefix string, fields map[string]reflect.Type, docs map[string]returnDoc) []string {
	var problems []string
	var names []string
	for k := range fields {
		names = append(names, k)
	}
	for k := range docs {
		if _, ok := fields[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		ft, returned := fields[k]
		d, documented := docs[k]
		switch {
		case !documented:
			problems = append(problems, fmt.Sprintf("return value %s%s is returned but not documented in RETURN", prefix, k))
			continue
		case !returned:
			problems = append(problems, fmt.Sprintf("return value %s%s is documented in RETURN but never returned", prefix, k))
			continue
		}
		typ, elements, inner := returnType(ft)
		if d.Type != typ {
			problems = append(problems, fmt.Sprintf("return value %s%s: documented type %q, returned %q", prefix, k, d.Type, typ))
		}
		if typ == "list" && d.Elements != "" && d.Elements != elements {
			problems = append(problems, fmt.Sprintf("return value %s%s: documented elements %q, returned %q", prefix, k, d.Elements, elements))
		}
		if inner != nil && !slices.Contains([]string{"raw"}, typ) {
			if len(d.Contains) == 0 {
				problems = append(problems, fmt.Sprintf("return value %s%s: its keys are not documented (contains)", prefix, k))
				continue
			}
			problems = append(problems, compareReturn(prefix+k+".", fieldsOf(inner), d.Contains)...)
		}
	}
	return problems
}
