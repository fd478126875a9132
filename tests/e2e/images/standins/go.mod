// Stand-ins for what needs SGX hardware in the e2e node tests: an aesmd answering on its socket and a
// PCCS answering over HTTPS. Standard library only, so the module builds in seconds and needs no go.sum.
module github.com/confidential-pods/confidential-pods/tests/e2e/images/standins

go 1.22
