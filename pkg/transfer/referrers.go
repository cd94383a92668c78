package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/oci"
)

// Referrer is one entry of a referrers list (an OCI index's descriptor).
type Referrer struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Referrers lists the manifests whose subject is dgst (distribution-spec
// v1.1, "Listing Referrers"), those of artifactType only when it is not
// empty (filtered here when the registry did not: no OCI-Filters-Applied).
// A registry without the referrers API answers 404: the error matches
// oci.ErrNotFound, and the caller falls back to a tag scheme. Only the
// first page is read; a registry pages referrers only past hundreds.
func (r *Repository) Referrers(ctx context.Context, dgst, artifactType string) ([]Referrer, error) {
	op := "listing referrers of " + r.Ref(dgst)
	if _, err := oci.ParseDigest(dgst); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	u := r.url("referrers", dgst)
	if artifactType != "" {
		u += "?" + url.Values{"artifactType": {artifactType}}.Encode()
	}
	resp, err := r.do(ctx, op, http.MethodGet, u, nil, map[string]string{"Accept": oci.MediaTypeOCIIndex})
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusOK); err != nil {
		return nil, err
	}
	var idx struct {
		Manifests []Referrer `json:"manifests"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxManifestSize)).Decode(&idx); err != nil {
		return nil, fmt.Errorf("%s: decoding the index: %w", op, err)
	}
	if artifactType == "" || resp.Header.Get("OCI-Filters-Applied") == "artifactType" {
		return idx.Manifests, nil
	}
	var out []Referrer
	for _, m := range idx.Manifests {
		if m.ArtifactType == artifactType {
			out = append(out, m)
		}
	}
	return out, nil
}

// PushBlob stores a small blob held in memory (a signature payload, a
// config) unless the repository has it: HEAD, then a monolithic upload
// (POST then PUT).
func (r *Repository) PushBlob(ctx context.Context, data []byte) (string, error) {
	d := digest.FromBytes(data)
	ok, err := r.blobExists(ctx, d)
	if err != nil {
		return "", err
	}
	if ok {
		return d.String(), nil
	}
	loc, _, err := r.startUpload(ctx, "", "")
	if err != nil {
		return "", err
	}
	if err := r.putBlob(ctx, loc, descriptor{Digest: d, Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
		r.cancelUpload(loc)
		return "", err
	}
	return d.String(), nil
}

// PutSubject stores m under ref as Put does and returns the registry's
// OCI-Subject header: a registry with the referrers API sets it when m
// has a subject (distribution-spec v1.1, "Pushing Manifests with
// Subject"); one without leaves it out, and the client must then use a
// tag scheme.
func (r *Repository) PutSubject(ctx context.Context, ref string, m *Manifest) (subject string, err error) {
	op := fmt.Sprintf("PUT manifest %s (%s)", r.Ref(ref), m.Digest)
	resp, err := r.do(ctx, op, http.MethodPut, r.url("manifests", ref), m.Body, map[string]string{"Content-Type": m.MediaType})
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if err := oci.CheckResponse(resp, op, http.StatusCreated, http.StatusOK, http.StatusAccepted); err != nil {
		return "", err
	}
	if h, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		if want, err := digest.Parse(m.Digest); err == nil && h.Algorithm() == want.Algorithm() && h != want {
			return "", fmt.Errorf("%s: %w: the registry stored digest %s", op, ErrDigestMismatch, h)
		}
	}
	return resp.Header.Get("OCI-Subject"), nil
}
