package registry

import (
	"net/http"
	"slices"
	"strings"

	"github.com/imagegate/imagegate/pkg/registry/storage"
)

// Token scopes, as the Docker token specification defines them
// (docs/spec/auth/scope.md of distribution): a client asks the token
// endpoint for scopes "<type>:<name>:<action>[,<action>...]", and the token
// carries what was granted in its "access" claim, one entry per resource.
// A token authorizes a request only for the resources and actions it
// names; the version check (/v2/) needs no scope.

// Scope actions.
const (
	actionPull   = "pull"
	actionPush   = "push"
	actionDelete = "delete"
	actionAll    = "*"
)

// grant is one entry of a token's access claim.
type grant struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// requirement is one resource and action a request needs.
type requirement struct {
	typ, name, action string
}

// scope is the requirement as a scope a client may ask for. Writes ask for
// pull and push, as docker and every other client do.
func (q requirement) scope() string {
	switch q.action {
	case actionPull, actionAll:
		return q.typ + ":" + q.name + ":" + q.action
	}
	return q.typ + ":" + q.name + ":" + actionPull + "," + q.action
}

// read reports whether the requirement is a read, which anonymous access
// (WithAnonymousRead) covers.
func (q requirement) read() bool {
	return q.action == actionPull || q.typ == "registry"
}

// requirements lists what a request on rt needs: nothing for the version
// check; the catalog; pull or push on the route's repository (a delete is
// satisfied by push too, as zuul-registry's write level and imagegate's
// earlier tokens allowed); and for a cross-repository mount, pull on the
// source repository as well (distribution asks for the same).
func requirements(r *http.Request, rt route, need Access) []requirement {
	switch rt.kind {
	case routeBase, routeToken:
		return nil
	case routeCatalog:
		return []requirement{{"registry", "catalog", actionAll}}
	}
	action := actionPull
	if need == AccessWrite {
		action = actionPush
		if r.Method == http.MethodDelete {
			action = actionDelete
		}
	}
	reqs := []requirement{{"repository", rt.name, action}}
	if rt.kind == routeUploads && r.Method == http.MethodPost {
		q := r.URL.Query()
		if from := q.Get("from"); q.Get("mount") != "" && from != "" && from != rt.name && storage.ValidateRepository(from) == nil {
			reqs = append(reqs, requirement{"repository", from, actionPull})
		}
	}
	return reqs
}

// covers reports whether grants allow q.
func covers(grants []grant, q requirement) bool {
	for _, g := range grants {
		if g.Type != q.typ || g.Name != q.name {
			continue
		}
		for _, a := range g.Actions {
			switch {
			case a == q.action, a == actionAll:
				return true
			case q.action == actionDelete && a == actionPush:
				return true
			}
		}
	}
	return false
}

// level is the access an action needs of a user.
func level(typ, action string) Access {
	if typ == "repository" && action != actionPull {
		return AccessWrite
	}
	return AccessRead
}

// parseScopes reads scope parameters (each may hold several
// space-separated scopes) into the grants they ask for, in order, merged
// per resource. The name may contain ':' (a host:port prefix): the type
// ends at the first colon, the actions start after the last. A resource
// class ("repository(plugin)") is dropped with its scope; unknown types
// are kept, to be refused by grantable.
func parseScopes(params []string) []grant {
	var out []grant
	for _, param := range params {
		for _, s := range strings.Fields(param) {
			i, j := strings.IndexByte(s, ':'), strings.LastIndexByte(s, ':')
			if i < 0 || j <= i {
				continue
			}
			typ, name := s[:i], s[i+1:j]
			if name == "" || strings.ContainsAny(typ, "()") {
				continue
			}
			var actions []string
			for _, a := range strings.Split(s[j+1:], ",") {
				if a = strings.TrimSpace(a); a != "" && !slices.Contains(actions, a) {
					actions = append(actions, a)
				}
			}
			k := slices.IndexFunc(out, func(g grant) bool { return g.Type == typ && g.Name == name })
			if k < 0 {
				out = append(out, grant{Type: typ, Name: name, Actions: actions})
				continue
			}
			for _, a := range actions {
				if !slices.Contains(out[k].Actions, a) {
					out[k].Actions = append(out[k].Actions, a)
				}
			}
		}
	}
	return out
}

// scopeAccess returns the access the requested scopes need, and whether
// any scope was requested.
func scopeAccess(params []string) (Access, bool) {
	need, requested := AccessRead, false
	for _, param := range params {
		if len(strings.Fields(param)) > 0 {
			requested = true
		}
	}
	for _, g := range parseScopes(params) {
		for _, a := range g.Actions {
			if level(g.Type, a) == AccessWrite {
				need = AccessWrite
			}
		}
	}
	return need, requested
}

// grantable returns the part of the requested grants that access allows:
// known resources with valid names (repositories, the catalog) and the
// actions of that level. What is not granted is left out of the token, as
// distribution's token servers do; the registry then answers
// insufficient_scope for it.
func grantable(requested []grant, access Access) []grant {
	var out []grant
	for _, g := range requested {
		switch {
		case g.Type == "repository" && storage.ValidateRepository(g.Name) == nil:
		case g.Type == "registry" && g.Name == "catalog":
		default:
			continue
		}
		var actions []string
		for _, a := range g.Actions {
			switch {
			case g.Type == "registry" && a != actionAll:
			case g.Type == "repository" && !slices.Contains([]string{actionPull, actionPush, actionDelete, actionAll}, a):
			case access.allows(level(g.Type, a)):
				actions = append(actions, a)
			}
		}
		if len(actions) > 0 {
			out = append(out, grant{Type: g.Type, Name: g.Name, Actions: actions})
		}
	}
	return out
}
