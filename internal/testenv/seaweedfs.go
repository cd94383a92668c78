package testenv

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/imagegate/imagegate/internal/daemon"
)

// StartSeaweedFS starts a single-node SeaweedFS cluster (`weed server`:
// master, volume server, filer and S3 gateway in one process; SEAWEEDFS,
// built by tests/setup/deps.sh) bound to 127.0.0.1 only, with telemetry
// off, its S3 gateway over TLS on a free port with random admin
// credentials, and waits until the gateway answers. SeaweedFS is a
// distributed store whose listings keep an emptied prefix for about two
// minutes, which is what the registry's S3 driver must tolerate.
func StartSeaweedFS(t testing.TB) *S3Server {
	t.Helper()
	bin := Tool(t, "SEAWEEDFS", "weed")
	dir := ShortTempDir(t)
	tl := NewTLS(t, dir)
	s := &S3Server{Kind: "seaweedfs", Region: "us-east-1", Dir: dir, t: t,
		AccessKey: "ig" + RandomString(t, 8), SecretKey: RandomString(t, 20),
		CAFile: tl.CAFile, CAPEM: tl.CA.CertPEM}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	identities := map[string]any{"identities": []any{map[string]any{
		"name":        "imagegate",
		"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}}
	b, _ := json.Marshal(identities)
	s3Config := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(s3Config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	port := func() string { return strconv.Itoa(FreePort(t)) }
	s.Port = FreePort(t)
	s.Endpoint = "https://127.0.0.1:" + strconv.Itoa(s.Port)
	args := []string{"server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-dir=" + filepath.Join(dir, "data"),
		"-master.port=" + port(), "-master.port.grpc=" + port(),
		"-master.telemetry=false",
		// Every bucket is a collection that grows by several volumes:
		// small volumes, and enough of them for the tests buckets.
		"-master.volumeSizeLimitMB=64", "-volume.max=400",
		"-volume.port=" + port(), "-volume.port.grpc=" + port(),
		"-filer", "-filer.port=" + port(), "-filer.port.grpc=" + port(),
		"-s3", "-s3.port=" + strconv.Itoa(s.Port), "-s3.port.grpc=" + port(),
		"-s3.config=" + s3Config, "-s3.iam=false",
		"-s3.cert.file=" + tl.CertFile, "-s3.key.file=" + tl.KeyFile,
	}
	s.start = func() *daemon.Process {
		return StartProcess(t, "seaweedfs", exec.Command(bin, args...), dir)
	}
	s.Process = s.start()
	s.waitReady()
	// The gateway answers before the volume server has registered: wait
	// until a bucket can be written.
	s.waitWritable()
	return s
}
