package publish

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/ocilayout"
	"github.com/imagegate/imagegate/pkg/sign"
	"github.com/imagegate/imagegate/pkg/transfer"
	"github.com/imagegate/imagegate/pkg/verify"
)

// attestJob is one provenance statement to sign for one platform image.
type attestJob struct {
	where, repository string
	st                *store
	subject           transfer.Descriptor
	statement         []byte
}

// provenanceStatements reads, from the source, the SLSA provenance
// statements BuildKit stored in an index's attestation manifests, one job
// per statement, each about its platform image. A statement that is not
// about the image its attestation manifest names is an error: signing it
// would vouch for another image.
func provenanceStatements(ctx context.Context, client *transfer.Client, source *uploadSource, src string,
	index []byte, base attestJob) ([]attestJob, error) {
	stmts, err := verify.ProvenanceStatements(ctx, index,
		func(ctx context.Context, dgst string) ([]byte, error) {
			m, err := source.manifest(ctx, client, src, dgst)
			if err != nil {
				return nil, err
			}
			return m.Body, nil
		},
		func(ctx context.Context, dgst string, size int64) ([]byte, error) {
			return source.blob(ctx, client, src, dgst, size)
		})
	if err != nil {
		return nil, err
	}
	out := make([]attestJob, 0, len(stmts))
	for _, st := range stmts {
		j := base
		j.subject, j.statement = st.Subject, st.Body
		out = append(out, j)
	}
	return out, nil
}

// blob reads a small blob of the image an upload's source names, from the
// buildset registry or the image layout, checked against its digest.
func (s *uploadSource) blob(ctx context.Context, client *transfer.Client, source, dgst string, size int64) ([]byte, error) {
	if size > verify.MaxStatement {
		return nil, fmt.Errorf("blob %s: %d bytes, more than a statement may have (%d)", dgst, size, verify.MaxStatement)
	}
	if s.br != nil {
		host := s.br.Address()
		r, err := client.Repository(ctx, host, sourceRepo(source, host), false)
		if err != nil {
			return nil, err
		}
		return r.Blob(ctx, dgst)
	}
	l, err := ocilayout.Open(s.layout)
	if err != nil {
		return nil, err
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return nil, err
	}
	f, err := l.OpenBlob(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, verify.MaxStatement+1))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); d.Algorithm() != digest.SHA256 || hex.EncodeToString(sum[:]) != d.Encoded() {
		return nil, fmt.Errorf("blob %s in the image layout %s does not match its digest", dgst, s.layout)
	}
	return b, nil
}

// attestOne signs one provenance statement into a DSSE envelope (as cosign
// attest --key does) and stores it beside the image's signature (see
// verify.Store.Attest).
func attestOne(ctx context.Context, st *store, signer *sign.Signer, j attestJob, check bool) (form string, changed bool, err error) {
	return st.Attest(ctx, signer, j.subject, j.statement, check)
}
