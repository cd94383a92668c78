package sign

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// DSSE and in-toto vocabulary (DSSE protocol; in-toto attestation
// framework v1, whose statement type v0.1 cosign still writes).
const (
	PayloadTypeInToto = "application/vnd.in-toto+json"
	StatementV01      = "https://in-toto.io/Statement/v0.1"
	StatementV1       = "https://in-toto.io/Statement/v1"
	// SLSA provenance predicate types: BuildKit writes v0.2 by default and
	// v1 with version=v1; cosign attest --type slsaprovenance / slsaprovenance1.
	PredicateSLSAv02 = "https://slsa.dev/provenance/v0.2"
	PredicateSLSAv1  = "https://slsa.dev/provenance/v1"
)

// Envelope is a DSSE envelope.
type Envelope struct {
	PayloadType string `json:"payloadType"`
	Payload     string `json:"payload"`
	Signatures  []struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	} `json:"signatures"`
}

// pae is DSSE's pre-authentication encoding, what is signed:
// "DSSEv1 <len(type)> <type> <len(body)> <body>".
func pae(payloadType string, body []byte) []byte {
	return []byte("DSSEv1 " + strconv.Itoa(len(payloadType)) + " " + payloadType + " " + strconv.Itoa(len(body)) + " " + string(body))
}

// Subject is one subject of an in-toto statement.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Statement is an in-toto statement.
type Statement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Subject       []Subject       `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

// About reports whether the statement has digest among its subjects.
func (s *Statement) About(dgst string) bool {
	alg, hex, ok := strings.Cut(dgst, ":")
	if !ok {
		return false
	}
	for _, sub := range s.Subject {
		if sub.Digest[alg] == hex {
			return true
		}
	}
	return false
}

// Attest signs statement (an in-toto statement's JSON) into a DSSE
// envelope, as cosign attest --key does, and returns the layer that
// carries it (media type MediaTypeDSSE, annotated with the predicate type
// and an empty signature annotation, as cosign writes).
func (s *Signer) Attest(statement []byte) (Blob, error) {
	var st Statement
	if err := json.Unmarshal(statement, &st); err != nil {
		return Blob{}, fmt.Errorf("%w: the statement: %v", ErrFormat, err)
	}
	sig, err := s.Sign(pae(PayloadTypeInToto, statement))
	if err != nil {
		return Blob{}, err
	}
	env := Envelope{PayloadType: PayloadTypeInToto, Payload: base64.StdEncoding.EncodeToString(statement)}
	env.Signatures = append(env.Signatures, struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	}{Sig: base64.StdEncoding.EncodeToString(sig)})
	b, err := json.Marshal(env)
	if err != nil {
		return Blob{}, err
	}
	d := describe(MediaTypeDSSE, b)
	d.Annotations = map[string]string{AnnotationSignature: "", AnnotationPredicateType: st.PredicateType}
	return Blob{Descriptor: d, Data: b}, nil
}

// VerifyAttestation checks a DSSE envelope: one of its signatures verifies
// with v's key over the pre-authentication encoding, its payload is an
// in-toto statement, and digest is one of its subjects. Errors match
// ErrBadSignature, ErrSubject or ErrFormat.
func (v *Verifier) VerifyAttestation(envelope []byte, digest string) (*Statement, error) {
	var env Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("%w: not a DSSE envelope: %v", ErrFormat, err)
	}
	if env.PayloadType != PayloadTypeInToto {
		return nil, fmt.Errorf("%w: DSSE payload type %q, not %q", ErrFormat, env.PayloadType, PayloadTypeInToto)
	}
	body, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: the DSSE payload is not base64", ErrFormat)
	}
	verified := false
	for _, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err == nil && v.Verify(pae(env.PayloadType, body), sig) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, ErrBadSignature
	}
	var st Statement
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("%w: the signed statement: %v", ErrFormat, err)
	}
	if st.Type != StatementV01 && st.Type != StatementV1 {
		return nil, fmt.Errorf("%w: statement type %q", ErrFormat, st.Type)
	}
	if !st.About(digest) {
		var names []string
		for _, s := range st.Subject {
			names = append(names, fmt.Sprintf("%s@sha256:%s", s.Name, s.Digest["sha256"]))
		}
		return nil, fmt.Errorf("%w: its subjects are %s", ErrSubject, strings.Join(names, ", "))
	}
	return &st, nil
}

// Zuul labels: the build passes them to BuildKit as image labels, and
// BuildKit's SLSA provenance records them among the build's parameters
// (v0.2: predicate.invocation.parameters.args; v1:
// predicate.buildDefinition.externalParameters.request.args) as
// "label:<name>".
const (
	LabelChange   = "org.zuul-ci.change"
	LabelPatchset = "org.zuul-ci.patchset"
	LabelPipeline = "org.zuul-ci.pipeline"
	LabelBuild    = "org.zuul-ci.build"
	LabelProject  = "org.zuul-ci.project"
	LabelJob      = "org.zuul-ci.job"
)

// ZuulBuild is the Zuul build a provenance statement names.
type ZuulBuild struct {
	Change   string `json:"change"`
	Patchset string `json:"patchset"`
	Pipeline string `json:"pipeline"`
	Build    string `json:"build"`
	Project  string `json:"project,omitempty"`
	Job      string `json:"job,omitempty"`
}

// Provenance reads the Zuul build an SLSA provenance statement (v0.2 or
// v1, in BuildKit's layout) names; ok is false for another predicate.
func Provenance(st *Statement) (zb ZuulBuild, ok bool, err error) {
	var args map[string]any
	switch st.PredicateType {
	case PredicateSLSAv02:
		var p struct {
			Invocation struct {
				Parameters struct {
					Args map[string]any `json:"args"`
				} `json:"parameters"`
			} `json:"invocation"`
		}
		if err := json.Unmarshal(st.Predicate, &p); err != nil {
			return zb, true, fmt.Errorf("%w: SLSA v0.2 predicate: %v", ErrFormat, err)
		}
		args = p.Invocation.Parameters.Args
	case PredicateSLSAv1:
		var p struct {
			BuildDefinition struct {
				ExternalParameters struct {
					Request struct {
						Args map[string]any `json:"args"`
					} `json:"request"`
				} `json:"externalParameters"`
			} `json:"buildDefinition"`
		}
		if err := json.Unmarshal(st.Predicate, &p); err != nil {
			return zb, true, fmt.Errorf("%w: SLSA v1 predicate: %v", ErrFormat, err)
		}
		args = p.BuildDefinition.ExternalParameters.Request.Args
	default:
		return zb, false, nil
	}
	get := func(label string) string {
		if s, ok := args["label:"+label].(string); ok {
			return s
		}
		return ""
	}
	return ZuulBuild{Change: get(LabelChange), Patchset: get(LabelPatchset), Pipeline: get(LabelPipeline),
		Build: get(LabelBuild), Project: get(LabelProject), Job: get(LabelJob)}, true, nil
}
