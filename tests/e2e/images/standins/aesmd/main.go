// Command aesmd is a stand-in for Intel's AESM service (linux-sgx psw/ae/aesm_service) on nodes without
// SGX: it creates the socket aesmd serves, /var/run/aesmd/aesm.socket, and answers on it in aesmd's own
// framing, so that what the webhook injects (the socket's volume and mount, SGX_AESM_ADDR, the aesmd
// sidecar) can be proven from inside a running pod.
//
// Framing (psw/ae/aesm_service/source/core/ipc/SocketTransporter.cpp): each message is a uint32 length in
// host byte order followed by that many bytes of a serialized protobuf, aesm.message.Request from the
// client and aesm.message.Response back (messages.proto, proto2). The stand-in answers
// GetSupportedAttKeyIDNumRequest (Request field 21) with GetSupportedAttKeyIDNumResponse (Response field
// 21): errorCode 0 and att_key_id_num. Every other request aesmd knows is answered in its own Response
// field with errorCode AESM_SERVICE_UNAVAILABLE (30): there is no quoting enclave here. A message that is
// not a known request closes the connection, as aesmd's AESMQueueManager does.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

const (
	// maxMessage bounds what one request may announce; aesmd's largest requests (a quote's SigRL) are
	// far smaller.
	maxMessage = 1 << 20
	// idleTimeout closes a connection that sends nothing for this long.
	idleTimeout = 5 * time.Minute

	fieldGetSupportedAttKeyIDNum = 21

	aesmSuccess            = 0  // AESM_SUCCESS (psw/ae/inc/internal/aesm_error.h)
	aesmServiceUnavailable = 30 // AESM_SERVICE_UNAVAILABLE

	wireVarint = 0
	wire64     = 1
	wireBytes  = 2
	wire32     = 5
)

// requests are the fields of aesm.message.Request, each answered in the Response field of the same number.
var requests = map[uint64]string{
	1: "InitQuote", 2: "GetQuote", 3: "GetLaunchToken", 4: "ReportAttestationError",
	10: "GetWhiteListSize", 11: "GetWhiteList", 12: "SGXGetExtendedEpidGroupId",
	13: "SGXSwitchExtendedEpidGroup", 14: "SGXRegister", 15: "InitQuoteEx", 16: "GetQuoteSizeEx",
	17: "GetQuoteEx", 18: "CheckUpdateStatus", 19: "SelectAttKeyID", 21: "GetSupportedAttKeyIDNum",
	22: "GetSupportedAttKeyIDs",
}

type field struct {
	number uint64
	wire   uint64
	value  uint64 // varint fields
	bytes  []byte // length-delimited fields
}

func main() {
	socket := flag.String("socket", "/var/run/aesmd/aesm.socket", "path of the socket to create")
	keyIDs := flag.Uint("att-key-id-num", 1, "att_key_id_num answered to GetSupportedAttKeyIDNum")
	qcnl := flag.String("qcnl", "/etc/sgx_default_qcnl.conf", "the quote library's configuration, logged when present")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)

	logQcnl(*qcnl)
	listener, err := listen(*socket)
	if err != nil {
		log.Fatalf("aesmd stand-in: %v", err)
	}
	log.Printf("aesmd stand-in listening on %s (att_key_id_num=%d)", *socket, *keyIDs)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-stop
		log.Printf("aesmd stand-in: %v, closing %s", sig, *socket)
		listener.Close() // removes the socket file
	}()

	for {
		conn, err := listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			log.Printf("accept: %v", err)
			continue
		}
		go serve(conn, uint32(*keyIDs))
	}
}

// listen creates the socket as aesmd does: its directory if missing, a stale socket replaced, mode 0777
// so that containers running as any user can connect (UnixServerSocket.cpp).
func listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if info, err := os.Lstat(path); err == nil && info.Mode()&os.ModeSocket != 0 {
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	listener, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o777); err != nil {
		listener.Close()
		return nil, err
	}
	return listener, nil
}

func logQcnl(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		log.Printf("no quote library configuration at %s (%v)", path, err)
		return
	}
	var config struct {
		PccsURL string `json:"pccs_url"`
	}
	if err := json.Unmarshal(data, &config); err != nil {
		log.Printf("%s is not JSON: %v", path, err)
		return
	}
	log.Printf("quote library configuration %s: pccs_url=%q", path, config.PccsURL)
}

func serve(conn net.Conn, keyIDs uint32) {
	defer conn.Close()
	reader := bufio.NewReader(conn)
	for {
		conn.SetDeadline(time.Now().Add(idleTimeout))
		request, err := readMessage(reader)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Printf("connection closed: %v", err)
			}
			return
		}
		response, name, err := answer(request, keyIDs)
		if err != nil {
			log.Printf("malformed request, connection closed: %v", err)
			return
		}
		if err := writeMessage(conn, response); err != nil {
			log.Printf("%s: %v", name, err)
			return
		}
		log.Printf("answered %s", name)
	}
}

func readMessage(reader io.Reader) ([]byte, error) {
	var size uint32
	if err := binary.Read(reader, binary.NativeEndian, &size); err != nil {
		return nil, err
	}
	if size == 0 || size > maxMessage {
		return nil, fmt.Errorf("message size %d out of range", size)
	}
	message := make([]byte, size)
	if _, err := io.ReadFull(reader, message); err != nil {
		return nil, fmt.Errorf("message body: %w", err)
	}
	return message, nil
}

func writeMessage(writer io.Writer, message []byte) error {
	framed := binary.NativeEndian.AppendUint32(make([]byte, 0, 4+len(message)), uint32(len(message)))
	_, err := writer.Write(append(framed, message...))
	return err
}

// answer returns the serialized aesm.message.Response to a serialized aesm.message.Request.
func answer(request []byte, keyIDs uint32) ([]byte, string, error) {
	fields, err := parse(request)
	if err != nil {
		return nil, "", err
	}
	for _, f := range fields {
		name, known := requests[f.number]
		if !known || f.wire != wireBytes {
			continue
		}
		if _, err := parse(f.bytes); err != nil {
			return nil, "", fmt.Errorf("%sRequest: %w", name, err)
		}
		var inner []byte
		if f.number == fieldGetSupportedAttKeyIDNum {
			inner = appendVarintField(inner, 1, aesmSuccess)
			inner = appendVarintField(inner, 2, uint64(keyIDs))
		} else {
			inner = appendVarintField(inner, 1, aesmServiceUnavailable)
		}
		return appendBytesField(nil, f.number, inner), name, nil
	}
	return nil, "", errors.New("no request aesmd knows")
}

// parse splits one protobuf message into its fields (wire format: key = number<<3 | wire type).
func parse(message []byte) ([]field, error) {
	var fields []field
	for len(message) > 0 {
		key, n := binary.Uvarint(message)
		if n <= 0 {
			return nil, errors.New("bad field key")
		}
		message = message[n:]
		f := field{number: key >> 3, wire: key & 7}
		if f.number == 0 {
			return nil, errors.New("field number 0")
		}
		switch f.wire {
		case wireVarint:
			f.value, n = binary.Uvarint(message)
			if n <= 0 {
				return nil, errors.New("bad varint")
			}
			message = message[n:]
		case wire64, wire32:
			size := 8
			if f.wire == wire32 {
				size = 4
			}
			if len(message) < size {
				return nil, errors.New("truncated fixed-size field")
			}
			message = message[size:]
		case wireBytes:
			size, n := binary.Uvarint(message)
			if n <= 0 || size > uint64(len(message)-n) {
				return nil, errors.New("bad length-delimited field")
			}
			f.bytes = message[n : n+int(size)]
			message = message[n+int(size):]
		default:
			return nil, fmt.Errorf("unsupported wire type %d", f.wire)
		}
		fields = append(fields, f)
	}
	return fields, nil
}

func appendVarintField(b []byte, number, value uint64) []byte {
	b = binary.AppendUvarint(b, number<<3|wireVarint)
	return binary.AppendUvarint(b, value)
}

func appendBytesField(b []byte, number uint64, value []byte) []byte {
	b = binary.AppendUvarint(b, number<<3|wireBytes)
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}
