package sbom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/spdx/tools-golang/spdx/v2/common"
	spdx "github.com/spdx/tools-golang/spdx/v2/v2_3"
)

// In-toto and SPDX names (in-toto attestation spec v0.1, SPDX 2.3
// clauses 6 and 7), as BuildKit's SBOM protocol expects them.
const (
	StatementType = "https://in-toto.io/Statement/v0.1"
	PredicateType = "https://spdx.dev/Document"
	// Creator names this tool in the document's creation info.
	Creator = "imagegate-sbom-scanner"
	// namespaceBase prefixes documentNamespace, which SPDX wants unique
	// per document: the content's hash makes it so.
	namespaceBase = "https://imagegate.invalid/spdx/"
)

// Document is the SPDX 2.3 document of the packages found in the
// filesystem called name: every package described by the document, each
// with its purl, where it was found, and a Go binary's modules
// DEPENDENCY_OF its main module.
func Document(name string, pkgs []Package, created time.Time) (*spdx.Document, error) {
	doc := &spdx.Document{
		SPDXVersion:    spdx.Version,
		DataLicense:    spdx.DataLicense,
		SPDXIdentifier: "DOCUMENT",
		DocumentName:   name,
		CreationInfo: &spdx.CreationInfo{
			Creators: []common.Creator{{CreatorType: "Tool", Creator: Creator}},
			Created:  created.UTC().Format(time.RFC3339),
		},
	}
	mains := map[string]common.ElementID{}
	for i, p := range pkgs {
		id := common.ElementID("Package-" + string(p.Kind) + "-" + strconv.Itoa(i+1))
		sp := &spdx.Package{
			PackageName:             p.Name,
			PackageSPDXIdentifier:   id,
			PackageVersion:          p.Version,
			PackageDownloadLocation: "NOASSERTION",
			PackageLicenseConcluded: "NOASSERTION",
			PackageLicenseDeclared:  "NOASSERTION",
			PackageCopyrightText:    "NOASSERTION",
			PackageSourceInfo:       "found in " + p.Location,
			PackageSupplier:         &common.Supplier{Supplier: "NOASSERTION"},
		}
		if purl := p.PURL(); purl != "" {
			sp.PackageExternalReferences = []*spdx.PackageExternalReference{{Category: "PACKAGE-MANAGER", RefType: "purl", Locator: purl}}
		}
		doc.Packages = append(doc.Packages, sp)
		doc.Relationships = append(doc.Relationships, &spdx.Relationship{
			RefA: common.MakeDocElementID("", "DOCUMENT"), RefB: common.MakeDocElementID("", string(id)), Relationship: "DESCRIBES"})
		if p.Kind == KindGolang && p.Main {
			mains[p.Location] = id
		}
	}
	for i, p := range pkgs {
		if p.Kind != KindGolang || p.Main {
			continue
		}
		if m, ok := mains[p.Location]; ok {
			doc.Relationships = append(doc.Relationships, &spdx.Relationship{
				RefA: common.MakeDocElementID("", string(doc.Packages[i].PackageSPDXIdentifier)), RefB: common.MakeDocElementID("", string(m)),
				Relationship: "DEPENDENCY_OF"})
		}
	}
	// The namespace is the hash of the document without it.
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding the SPDX document: %w", err)
	}
	sum := sha256.Sum256(b)
	doc.DocumentNamespace = namespaceBase + name + "-" + hex.EncodeToString(sum[:8])
	return doc, nil
}

// statement is an in-toto v0.1 statement without subjects: BuildKit
// fills in the image it attaches the statement to.
type statement struct {
	Type          string         `json:"_type"`
	PredicateType string         `json:"predicateType"`
	Subject       []any          `json:"subject"`
	Predicate     *spdx.Document `json:"predicate"`
}

// Statement is doc wrapped in the in-toto statement BuildKit's generator
// protocol reads from BUILDKIT_SCAN_DESTINATION.
func Statement(doc *spdx.Document) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(statement{Type: StatementType, PredicateType: PredicateType, Subject: []any{}, Predicate: doc}); err != nil {
		return nil, fmt.Errorf("encoding the in-toto statement: %w", err)
	}
	return buf.Bytes(), nil
}
