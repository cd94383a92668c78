package dockerhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/oci"
)

const (
	testUser = "zuulbot"
	testPass = "s3cret-pass-9c1e"
)

// scripted is a Docker Hub stand-in for protocol corner cases: it checks
// credentials and tokens and serves whatever the test's handler returns.
type scripted struct {
	srv    *httptest.Server
	logins atomic.Int32
	token  atomic.Value // current valid token
}

func newScripted(t *testing.T, h func(s *scripted, w http.ResponseWriter, r *http.Request)) (*scripted, *Client) {
	t.Helper()
	s := &scripted{}
	s.token.Store("tok-1")
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/users/login/" {
			if r.Method != http.MethodPost {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			var body map[string]string
			json.NewDecoder(r.Body).Decode(&body)
			if body["username"] != testUser || body["password"] != testPass {
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"detail":"Incorrect authentication credentials"}`)
				return
			}
			n := s.logins.Add(1)
			tok := "tok-" + strconv.Itoa(int(n))
			s.token.Store(tok)
			json.NewEncoder(w).Encode(map[string]string{"token": tok})
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+s.token.Load().(string) {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"detail":"Authentication credentials were not provided."}`)
			return
		}
		h(s, w, r)
	}))
	t.Cleanup(s.srv.Close)
	c, err := New(testUser, testPass, WithURL(s.srv.URL), WithTransport(s.srv.Client().Transport))
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func TestLogin(t *testing.T) {
	t.Parallel()
	s, c := newScripted(t, func(*scripted, http.ResponseWriter, *http.Request) {})
	if err := c.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.logins.Load() != 1 {
		t.Errorf("logins = %d", s.logins.Load())
	}
	bad, err := New(testUser, "wrong-password-77", WithURL(s.srv.URL), WithTransport(s.srv.Client().Transport))
	if err != nil {
		t.Fatal(err)
	}
	err = bad.Login(context.Background())
	if !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
	if !strings.Contains(err.Error(), "Incorrect authentication credentials") || !strings.Contains(err.Error(), testUser) {
		t.Errorf("error does not explain: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-password-77") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestTagsPaginated(t *testing.T) {
	t.Parallel()
	const total = 250
	base := time.Date(2026, 1, 5, 21, 6, 53, 506400000, time.UTC)
	var pages atomic.Int32
	_, c := newScripted(t, func(s *scripted, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/repositories/myorg/app/tags/" {
			http.NotFound(w, r)
			return
		}
		pages.Add(1)
		size, _ := strconv.Atoi(r.URL.Query().Get("page_size"))
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		if page == 0 {
			page = 1
		}
		var results []map[string]any
		for i := (page - 1) * size; i < page*size && i < total; i++ {
			results = append(results, map[string]any{
				"name": fmt.Sprintf("t%03d", i), "digest": "sha256:" + strings.Repeat("a", 64),
				"last_updated":    base.Add(time.Duration(i) * time.Minute).Format("2006-01-02T15:04:05.000000Z"),
				"tag_last_pushed": nil, "media_type": oci.MediaTypeOCIIndex,
			})
		}
		var next any
		if page*size < total {
			next = fmt.Sprintf("https://%s/v2/repositories/myorg/app/tags/?page=%d&page_size=%d", r.Host, page+1, size)
		}
		json.NewEncoder(w).Encode(map[string]any{"count": total, "next": next, "previous": nil, "results": results})
	})
	tags, err := c.Tags(context.Background(), "docker.io/myorg/app")
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != total || pages.Load() != 3 {
		t.Fatalf("got %d tags in %d pages", len(tags), pages.Load())
	}
	if tags[249].Name != "t249" || !tags[249].LastUpdated.Equal(base.Add(249*time.Minute)) || tags[0].Digest == "" {
		t.Errorf("last tag = %+v", tags[249])
	}
}

func TestTagsRefusesForeignNextLink(t *testing.T) {
	t.Parallel()
	var foreign atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { foreign.Add(1) }))
	defer other.Close()
	_, c := newScripted(t, func(s *scripted, w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"count": 2, "next": other.URL + "/steal", "results": []map[string]any{{"name": "a"}}})
	})
	_, err := c.Tags(context.Background(), "myorg/app")
	if err == nil || !strings.Contains(err.Error(), "refusing to send the token") {
		t.Fatalf("err = %v", err)
	}
	if foreign.Load() != 0 {
		t.Error("the foreign host was contacted")
	}
}

func TestTagsPaginationLoop(t *testing.T) {
	t.Parallel()
	_, c := newScripted(t, func(s *scripted, w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"count": 2, "next": "https://" + r.Host + r.URL.RequestURI(), "results": []map[string]any{{"name": "a"}}})
	})
	_, err := c.Tags(context.Background(), "myorg/app")
	if err == nil || !strings.Contains(err.Error(), "pagination does not end") {
		t.Fatalf("err = %v", err)
	}
}

func TestExpiredTokenRefreshedOnce(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	var reject atomic.Bool
	s, c := newScripted(t, func(s *scripted, w http.ResponseWriter, r *http.Request) {
		if reject.Load() {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		calls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	if err := c.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The server forgets the client's token, as when a JWT expires: the
	// client logs in again and repeats the call once.
	s.token.Store("expired")
	if err := c.DeleteTag(context.Background(), "myorg/app", "change_1_latest"); err != nil {
		t.Fatalf("after re-login: %v", err)
	}
	if s.logins.Load() != 2 || calls.Load() != 1 {
		t.Errorf("logins %d, deletes %d; want 2, 1", s.logins.Load(), calls.Load())
	}
	// A server that refuses every token: one re-login, then the 401.
	reject.Store(true)
	err := c.DeleteTag(context.Background(), "myorg/app", "change_1_latest")
	if !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
	if s.logins.Load() != 3 {
		t.Errorf("logins %d; want 3 (one retry, no loop)", s.logins.Load())
	}
}

func TestDeleteTagStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		body   string
		want   error
		detail string
	}{
		{http.StatusNoContent, "", nil, ""},
		{http.StatusOK, "", nil, ""},
		{http.StatusNotFound, `{"message":"tag not found","errinfo":{}}`, oci.ErrNotFound, "tag not found"},
		{http.StatusForbidden, `{"detail":"You do not have permission to perform this action."}`, oci.ErrForbidden, "permission"},
		{http.StatusInternalServerError, `oops`, nil, "oops"},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			t.Parallel()
			var path string
			_, c := newScripted(t, func(s *scripted, w http.ResponseWriter, r *http.Request) {
				path = r.Method + " " + r.URL.Path
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			})
			err := c.DeleteTag(context.Background(), "myorg/app", "change_12_latest")
			if path != "DELETE /v2/repositories/myorg/app/tags/change_12_latest/" {
				t.Errorf("request = %q", path)
			}
			switch {
			case tc.status < 300:
				if err != nil {
					t.Errorf("err = %v", err)
				}
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("err = %v, want %v", err, tc.want)
			case err == nil || !strings.Contains(err.Error(), tc.detail) || !strings.Contains(err.Error(), "myorg/app:change_12_latest"):
				t.Errorf("err = %v", err)
			}
		})
	}
}

func TestSplitRepository(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, ns, name string
		err          bool
	}{
		{"myorg/app", "myorg", "app", false},
		{"docker.io/myorg/app", "myorg", "app", false},
		{"index.docker.io/myorg/app", "myorg", "app", false},
		{"busybox", "library", "busybox", false},
		{"a/b/c", "", "", true},
		{"myorg/", "", "", true},
		{"MyOrg/app", "", "", true},
		{"myorg/app:latest", "", "", true},
	}
	for _, tc := range tests {
		ns, name, err := SplitRepository(tc.in)
		if (err != nil) != tc.err || ns != tc.ns || name != tc.name {
			t.Errorf("SplitRepository(%q) = %q, %q, %v", tc.in, ns, name, err)
		}
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"http://hub.example", "ftp://x", "https://", "https://u:p@hub.example"} {
		if _, err := New("u", "p", WithURL(u)); err == nil {
			t.Errorf("URL %q accepted", u)
		}
	}
	if _, err := New("", "p"); err == nil {
		t.Error("empty username accepted")
	}
	if _, err := New("u", "p", WithPageSize(101)); err == nil {
		t.Error("page size 101 accepted")
	}
}
