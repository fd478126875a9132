// Command pccs is a stand-in for Intel's Provisioning Certificate Caching Service
// (SGXDataCenterAttestationPrimitives QuoteGeneration/pccs) on a test network without Intel's PCS: an
// HTTPS server answering the v4 routes that need no platform data, as PCCS answers them.
//
//	GET /sgx/certification/v4/rootcacrl                  hex of the root CA's DER CRL (application/pkix-crl)
//	GET /sgx/certification/v4/pckcrl?ca=processor|platform[&encoding=der]
//	                                                     hex of the DER CRL (application/x-pem-file, as PCCS
//	                                                     labels it), or the DER itself with encoding=der;
//	                                                     header SGX-PCK-CRL-Issuer-Chain
//	GET /sgx/certification/v4/qe/identity[?update=standard|early]
//	GET /sgx/certification/v4/qve/identity[?update=standard|early]
//	                                                     {"enclaveIdentity": {...}, "signature": "<hex r||s>"};
//	                                                     header SGX-Enclave-Identity-Issuer-Chain
//
// A bad ca or update parameter is 400 (PCCS_STATUS_INVALID_REQ); anything else is 404. The CRLs and the
// identities are signed by a stand-in of Intel's PKI (root CA, PCK processor and platform CAs, TCB
// signing), made afresh at every start: plausible collateral, trusted by nobody. The issuer chains are
// URL-encoded PEM, as PCS sends them. The server's own certificate and key come from files (a
// Kubernetes TLS Secret: -cert/-key, or PCCS_TLS_CERT/PCCS_TLS_KEY), so that pods can trust it through
// the test CA that signed it.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net/http"
	"os"
	"strings"
	"time"
)

const prefix = "/sgx/certification/v4/"

// Values of Intel's published QE and QvE identities (the quoting and verification enclaves' signer).
const (
	intelMrsigner  = "8C4F5775D796503E96137F77C68A829A0056AC8DED70140B081B094490C57BFF"
	miscselect     = "00000000"
	miscselectMask = "FFFFFFFF"
	attributes     = "11000000000000000000000000000000"
	attributesMask = "FBFFFFFFFFFFFFFF0000000000000000"
)

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

// collateral is everything the stand-in serves, made once at start.
type collateral struct {
	rootCRL       []byte            // DER
	pckCRL        map[string][]byte // "processor" | "platform" → DER
	pckCRLChain   map[string]string // URL-encoded PEM: the issuing CA, then the root
	identity      map[string][]byte // "qe" | "qve" → JSON body
	identityChain string            // URL-encoded PEM: TCB signing, then the root
}

func main() {
	listen := flag.String("listen", env("PCCS_LISTEN", ":8081"), "address to serve HTTPS on (PCCS's default port)")
	certFile := flag.String("cert", env("PCCS_TLS_CERT", "/etc/pccs/tls/tls.crt"), "serving certificate (PEM)")
	keyFile := flag.String("key", env("PCCS_TLS_KEY", "/etc/pccs/tls/tls.key"), "serving key (PEM)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)

	pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("pccs stand-in: serving certificate: %v", err)
	}
	served, err := newCollateral(time.Now().UTC())
	if err != nil {
		log.Fatalf("pccs stand-in: collateral: %v", err)
	}
	server := &http.Server{
		Addr:              *listen,
		Handler:           logged(served),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Printf("pccs stand-in serving https on %s", *listen)
	log.Fatal(server.ListenAndServeTLS("", ""))
}

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func (c *collateral) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route, ours := strings.CutPrefix(r.URL.Path, prefix)
	if !ours || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	query := r.URL.Query()
	switch route {
	case "rootcacrl":
		send(w, "application/pkix-crl", nil, []byte(hex.EncodeToString(c.rootCRL)))
	case "pckcrl":
		ca := strings.ToLower(query.Get("ca"))
		crl, known := c.pckCRL[ca]
		if !known {
			http.Error(w, "invalid ca", http.StatusBadRequest)
			return
		}
		chain := map[string]string{"SGX-PCK-CRL-Issuer-Chain": c.pckCRLChain[ca]}
		if strings.EqualFold(query.Get("encoding"), "der") {
			send(w, "application/pkix-crl", chain, crl)
		} else {
			send(w, "application/x-pem-file", chain, []byte(hex.EncodeToString(crl)))
		}
	case "qe/identity", "qve/identity":
		update := strings.ToLower(query.Get("update"))
		if update != "" && update != "standard" && update != "early" {
			http.Error(w, "invalid update type", http.StatusBadRequest)
			return
		}
		chain := map[string]string{"SGX-Enclave-Identity-Issuer-Chain": c.identityChain}
		send(w, "application/json", chain, c.identity[strings.TrimSuffix(route, "/identity")])
	default:
		http.NotFound(w, r)
	}
}

func send(w http.ResponseWriter, contentType string, headers map[string]string, body []byte) {
	for name, value := range headers {
		w.Header().Set(name, value)
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(status int) {
	s.status = status
	s.ResponseWriter.WriteHeader(status)
}

func logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		recorder := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(recorder, r)
		log.Printf("%s %s %d", r.Method, r.URL.RequestURI(), recorder.status)
	})
}

func newCollateral(now time.Time) (*collateral, error) {
	root, err := newAuthority("Intel SGX Root CA", nil, now, true)
	if err != nil {
		return nil, err
	}
	c := &collateral{pckCRL: map[string][]byte{}, pckCRLChain: map[string]string{}, identity: map[string][]byte{}}
	if c.rootCRL, err = newCRL(root, now); err != nil {
		return nil, err
	}
	for ca, name := range map[string]string{"processor": "Intel SGX PCK Processor CA", "platform": "Intel SGX PCK Platform CA"} {
		issuer, err := newAuthority(name, root, now, true)
		if err != nil {
			return nil, err
		}
		if c.pckCRL[ca], err = newCRL(issuer, now); err != nil {
			return nil, err
		}
		c.pckCRLChain[ca] = uriComponent(issuer.pem + root.pem)
	}
	signing, err := newAuthority("Intel SGX TCB Signing", root, now, false)
	if err != nil {
		return nil, err
	}
	c.identityChain = uriComponent(signing.pem + root.pem)
	for id, enclave := range map[string]struct {
		name        string
		prodID, svn int
	}{"qe": {"QE", 1, 8}, "qve": {"QVE", 2, 3}} {
		if c.identity[id], err = newIdentity(signing, enclave.name, enclave.prodID, enclave.svn, now); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func newAuthority(name string, parent *authority, now time.Time, isCA bool) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName: name, Organization: []string{"Intel Corporation (confidential-pods e2e stand-in)"},
			Locality: []string{"Santa Clara"}, Province: []string{"CA"}, Country: []string{"US"},
		},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
	}
	if isCA {
		template.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	issuer, issuerKey := template, key
	if parent != nil {
		issuer, issuerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, issuer, &key.PublicKey, issuerKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}, nil
}

func newCRL(issuer *authority, now time.Time) ([]byte, error) {
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: now,
		NextUpdate: now.AddDate(0, 0, 30),
	}, issuer.cert, issuer.key)
}

type tcbLevel struct {
	Tcb struct {
		Isvsvn int `json:"isvsvn"`
	} `json:"tcb"`
	TcbDate   string `json:"tcbDate"`
	TcbStatus string `json:"tcbStatus"`
}

// enclaveIdentity has the fields of PCS's Enclave Identity v2, in PCS's order.
type enclaveIdentity struct {
	ID                      string     `json:"id"`
	Version                 int        `json:"version"`
	IssueDate               string     `json:"issueDate"`
	NextUpdate              string     `json:"nextUpdate"`
	TcbEvaluationDataNumber int        `json:"tcbEvaluationDataNumber"`
	Miscselect              string     `json:"miscselect"`
	MiscselectMask          string     `json:"miscselectMask"`
	Attributes              string     `json:"attributes"`
	AttributesMask          string     `json:"attributesMask"`
	Mrsigner                string     `json:"mrsigner"`
	Isvprodid               int        `json:"isvprodid"`
	TcbLevels               []tcbLevel `json:"tcbLevels"`
}

// newIdentity is the JSON body PCS sends: the identity, and the hex of the ECDSA signature (r||s, 32 bytes
// each) of the TCB signing key over the identity's exact bytes.
func newIdentity(signing *authority, id string, prodID, svn int, now time.Time) ([]byte, error) {
	level := tcbLevel{TcbDate: now.Truncate(24 * time.Hour).Format(time.RFC3339), TcbStatus: "UpToDate"}
	level.Tcb.Isvsvn = svn
	raw, err := json.Marshal(enclaveIdentity{
		ID: id, Version: 2, IssueDate: now.Format(time.RFC3339), NextUpdate: now.AddDate(0, 0, 30).Format(time.RFC3339),
		TcbEvaluationDataNumber: 17, Miscselect: miscselect, MiscselectMask: miscselectMask,
		Attributes: attributes, AttributesMask: attributesMask, Mrsigner: intelMrsigner, Isvprodid: prodID,
		TcbLevels: []tcbLevel{level},
	})
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(raw)
	r, s, err := ecdsa.Sign(rand.Reader, signing.key, digest[:])
	if err != nil {
		return nil, err
	}
	signature := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return []byte(fmt.Sprintf(`{"enclaveIdentity":%s,"signature":"%s"}`, raw, hex.EncodeToString(signature))), nil
}

// uriComponent escapes as JavaScript's encodeURIComponent, which is how PCS encodes its chain headers.
func uriComponent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
