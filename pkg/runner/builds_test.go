package runner

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"crypto/tls"
	"github.com/imagegate/imagegate/pkg/pki"
	"github.com/imagegate/imagegate/pkg/zuul"
)

// TestBuildsAPI runs two gate items of one change and a promote item
// through real ansible-playbook with the builds API served: the promote
// item's job finds the change's gate builds with Zuul's query (newest
// first, with the artifacts the upload returned), over https with the
// runner's CA; filters, limit and bad queries answer as Zuul's.
func TestBuildsAPI(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"cfg/zuul.d/jobs.yaml": `
- job:
    name: upload
    parent: null
    run: playbooks/upload.yaml
- job:
    name: promote
    parent: null
    run: playbooks/promote.yaml
`,
		"cfg/playbooks/upload.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - zuul_return:
        data:
          zuul:
            artifacts:
              - name: "quay.io/myorg/app:latest"
                url: "docker://ir:5000/quay.io/myorg/app:{{ zuul.build }}_latest"
                metadata: {type: container_image, repository: quay.io/myorg/app, tag: latest}
`,
		"cfg/playbooks/promote.yaml": `- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.uri:
        url: "{{ builds_api }}/builds?change={{ zuul.change }}&patchset={{ zuul.patchset }}&pipeline=gate&job_name=upload"
        ca_path: "{{ builds_api_ca }}"
        return_content: true
      register: builds
    - ansible.builtin.copy:
        content: "{{ builds.json | to_json }}"
        dest: "{{ zuul.executor.work_root }}/builds.json"
`,
		"a/README": "a\n",
	}
	dir := t.TempDir()
	writeTree(t, dir, files)
	var progress bytes.Buffer
	r, err := New(WithWorkDir(filepath.Join(dir, "work")), WithProgress(&progress))
	if err != nil {
		t.Fatal(err)
	}
	api, err := r.Builds().ServeBuildsAPI("127.0.0.1:0", "example", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, api.CACert, 0o644); err != nil {
		t.Fatal(err)
	}
	q, err := ParseQueue([]byte(`
tenant: example
config: [{path: cfg, project: site/config}]
changes:
  - {project: myorg/app, change: 7, patchset: 2, src: a, pipeline: gate, jobs: [upload]}
  - {project: myorg/app, change: 7, patchset: 2, src: a, pipeline: gate, jobs: [upload]}
  - {project: myorg/app, change: 7, patchset: 2, src: a, pipeline: promote,
     vars: {builds_api: "`+api.URL+`", builds_api_ca: "`+caFile+`"}, jobs: [promote]}
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Run(context.Background(), q)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if rep.Failed() {
		t.Fatalf("%s\n%s", rep.Summary(), progress.String())
	}
	first, second := rep.Items[0].Build("upload"), rep.Items[1].Build("upload")
	seen := readJSON(t, rep.Items[2].Build("promote"), "builds").([]any)
	if len(seen) != 2 {
		t.Fatalf("the promote job found %d builds: %v", len(seen), seen)
	}
	newest := seen[0].(map[string]any)
	if newest["uuid"] != second.UUID || seen[1].(map[string]any)["uuid"] != first.UUID {
		t.Errorf("builds not newest first: %v (want %s, %s)", seen, second.UUID, first.UUID)
	}
	if newest["result"] != "SUCCESS" || newest["pipeline"] != "gate" || newest["job_name"] != "upload" ||
		newest["change"] != float64(7) || newest["patchset"] != "2" || newest["ref"] != "refs/changes/07/7/2" || newest["project"] != "myorg/app" {
		t.Errorf("build fields: %v", newest)
	}
	if _, err := time.Parse(zuul.BuildTime, newest["start_time"].(string)); err != nil {
		t.Errorf("start_time: %v", err)
	}
	arts := newest["artifacts"].([]any)
	if len(arts) != 1 || arts[0].(map[string]any)["url"] != "docker://ir:5000/quay.io/myorg/app:"+second.UUID+"_latest" {
		t.Errorf("artifacts: %v", arts)
	}

	pool, err := pki.CertPool(api.CACert)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	ctx := context.Background()
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"change=7&patchset=2&pipeline=gate&job_name=upload", 2},
		{"change=7&pipeline=promote", 1},
		{"change=8", 0},
		{"job_name=upload&limit=1", 1},
		{"job_name=upload&skip=1", 1},
		{"uuid=" + first.UUID, 1},
	} {
		got, err := zuul.QueryBuilds(ctx, hc, api.URL, tc.query)
		if err != nil || len(got) != tc.want {
			t.Errorf("%s: %d builds, %v; want %d", tc.query, len(got), err, tc.want)
		}
	}
	if _, err := zuul.QueryBuilds(ctx, hc, api.URL, "changes=7"); err == nil {
		t.Error("an unknown parameter was answered")
	}
	if _, err := zuul.QueryBuilds(ctx, hc, api.URL[:len(api.URL)-len("example")]+"other", "change=7"); err == nil {
		t.Error("another tenant was answered")
	}
}
