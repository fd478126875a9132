// Command sgx-device-plugin is a test stand-in for the two SGX device plugins the
// confidential-pods profiles target, speaking the real kubelet device-plugin API
// (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1) to a real kubelet in the e2e
// suite (tests/e2e/node.py). The device nodes it hands out are stand-ins the
// test creates (character devices in --dev-dir); containers receive them at the
// paths real SGX nodes have (/dev/sgx_enclave, /dev/sgx_provision).
//
// --mode=alibaba follows AliyunContainerService/sgx-device-plugin
// (pkg/device_plugin, pkg/sgx): one resource, alibabacloud.com/sgx_epc_MiB, one
// device per MiB of EPC (here --epc-mib instead of CPUID leaf 0x12); Allocate
// gives every container all SGX device nodes found ("rw"; /dev/sgx_enclave and
// /dev/sgx_provision also as /dev/sgx/enclave and /dev/sgx/provision), the env
// SGX_VISIBLE_DEVICES (the allocated IDs) and, when asked, /var/run/aesmd.
//
// --mode=intel follows intel-device-plugins-for-kubernetes cmd/sgx_plugin: two
// resources, sgx.intel.com/enclave and sgx.intel.com/provision (--enclave-limit
// and --provision-limit devices), each device the one node of its kind plus the
// deprecated /dev/sgx directory mount when present. sgx.intel.com/epc is not
// the plugin's: node-feature-discovery publishes it (the test sets it).
//
// Like the upstream plugins it re-registers when the kubelet restarts (the
// kubelet removes every socket of the plugin directory when it starts).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// resource is what one gRPC server of the plugin advertises: one resource name.
type resource struct {
	name     string
	socket   string // file name in the plugin directory
	devices  []*pluginapi.Device
	allocate func(ids []string) (*pluginapi.ContainerAllocateResponse, error)
}

func main() {
	mode := flag.String("mode", "", "alibaba or intel")
	devDir := flag.String("dev-dir", "/dev", "directory holding sgx_enclave and sgx_provision (stand-ins in tests)")
	pluginDir := flag.String("plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	epcMiB := flag.Uint("epc-mib", 0, "alibaba: EPC size in MiB, one device per MiB")
	aesmDir := flag.String("aesm-socket-dir", "", "alibaba: mount this host directory read-only at /var/run/aesmd")
	enclaveLimit := flag.Uint("enclave-limit", 110, "intel: number of sgx.intel.com/enclave devices")
	provisionLimit := flag.Uint("provision-limit", 110, "intel: number of sgx.intel.com/provision devices")
	flag.Parse()

	var resources []*resource
	switch *mode {
	case "alibaba":
		resources = []*resource{alibaba(*devDir, *epcMiB, *aesmDir)}
	case "intel":
		resources = intel(*devDir, *enclaveLimit, *provisionLimit)
	default:
		log.Fatalf("--mode must be alibaba or intel, not %q", *mode)
	}
	for _, r := range resources {
		if len(r.devices) == 0 {
			log.Fatalf("%s: no devices (is %s missing a device node, or the size 0?)", r.name, *devDir)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *pluginDir, resources); err != nil {
		log.Fatal(err)
	}
}

// run serves every resource and registers it, and again whenever the kubelet has removed its socket.
func run(ctx context.Context, pluginDir string, resources []*resource) error {
	servers := make([]*grpc.Server, len(resources))
	defer func() {
		for i, s := range servers {
			if s != nil {
				s.Stop()
				_ = os.Remove(filepath.Join(pluginDir, resources[i].socket))
			}
		}
	}()
	for {
		for i, r := range resources {
			if _, err := os.Stat(filepath.Join(pluginDir, r.socket)); err == nil && servers[i] != nil {
				continue
			}
			if servers[i] != nil {
				log.Printf("%s: socket removed (kubelet restarted?): serving and registering again", r.name)
				servers[i].Stop()
				servers[i] = nil
			}
			server, err := serve(pluginDir, r)
			if err != nil {
				return err
			}
			servers[i] = server
			if err := register(ctx, pluginDir, r); err != nil {
				// No kubelet yet: serve anyway and retry once the kubelet's socket is there.
				log.Printf("%s: %v; retrying", r.name, err)
				server.Stop()
				servers[i] = nil
				continue
			}
			log.Printf("%s: registered with %d devices", r.name, len(r.devices))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func serve(pluginDir string, r *resource) (*grpc.Server, error) {
	path := filepath.Join(pluginDir, r.socket)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	listener, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, &plugin{resource: r})
	go func() {
		if err := server.Serve(listener); err != nil {
			log.Printf("%s: server stopped: %v", r.name, err)
		}
	}()
	return server, nil
}

func register(ctx context.Context, pluginDir string, r *resource) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(pluginDir, filepath.Base(pluginapi.KubeletSocket)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     r.socket,
		ResourceName: r.name,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	if err != nil {
		return fmt.Errorf("register with the kubelet: %w", err)
	}
	return nil
}

// plugin is the DevicePlugin service of one resource.
type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	resource *resource
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the devices once: stand-ins never turn unhealthy.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.resource.devices}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, request *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	response := &pluginapi.AllocateResponse{}
	for _, container := range request.ContainerRequests {
		for _, id := range container.DevicesIds {
			if !known(p.resource.devices, id) {
				return nil, fmt.Errorf("invalid allocation request: unknown device: %s", id)
			}
		}
		answer, err := p.resource.allocate(container.DevicesIds)
		if err != nil {
			return nil, err
		}
		log.Printf("%s: allocate %s", p.resource.name, strings.Join(container.DevicesIds, ","))
		response.ContainerResponses = append(response.ContainerResponses, answer)
	}
	return response, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func known(devices []*pluginapi.Device, id string) bool {
	for _, d := range devices {
		if d.ID == id {
			return true
		}
	}
	return false
}

func healthy(ids []string) []*pluginapi.Device {
	devices := make([]*pluginapi.Device, 0, len(ids))
	for _, id := range ids {
		devices = append(devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
	}
	return devices
}

func exists(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir()
}

// alibaba: Aliyun's plugin. Every device node found is given to every container (pkg/sgx's driver list,
// SGX1 and SGX2), the SGX2 ones also under /dev/sgx/.
func alibaba(devDir string, epcMiB uint, aesmDir string) *resource {
	ids := make([]string, 0, epcMiB)
	for i := uint(0); i < epcMiB; i++ {
		ids = append(ids, fmt.Sprint(i))
	}
	var specs []*pluginapi.DeviceSpec
	for _, name := range []string{"isgx", "sgx", "sgx_enclave", "sgx_provision", "gsgx"} {
		host := filepath.Join(devDir, name)
		if !exists(host) {
			continue
		}
		specs = append(specs, &pluginapi.DeviceSpec{ContainerPath: "/dev/" + name, HostPath: host, Permissions: "rw"})
		if name == "sgx_enclave" || name == "sgx_provision" {
			specs = append(specs, &pluginapi.DeviceSpec{
				ContainerPath: "/dev/" + strings.ReplaceAll(name, "_", "/"), HostPath: host, Permissions: "rw",
			})
		}
	}
	var mounts []*pluginapi.Mount
	if aesmDir != "" {
		mounts = append(mounts, &pluginapi.Mount{ContainerPath: "/var/run/aesmd", HostPath: aesmDir, ReadOnly: true})
	}
	if len(specs) == 0 {
		ids = nil // upstream refuses to start without a driver
	}
	return &resource{
		name:    "alibabacloud.com/sgx_epc_MiB",
		socket:  "sgx.sock",
		devices: healthy(ids),
		allocate: func(ids []string) (*pluginapi.ContainerAllocateResponse, error) {
			return &pluginapi.ContainerAllocateResponse{
				Envs:    map[string]string{"SGX_VISIBLE_DEVICES": strings.Join(ids, ",")},
				Devices: specs,
				Mounts:  mounts,
			}, nil
		},
	}
}

// intel: Intel's sgx_plugin. One resource per device kind; a device is its node (and the deprecated /dev/sgx
// directory mount, when that directory exists).
func intel(devDir string, enclaveLimit, provisionLimit uint) []*resource {
	var mounts []*pluginapi.Mount
	if info, err := os.Stat(filepath.Join(devDir, "sgx")); err == nil && info.IsDir() {
		mounts = append(mounts, &pluginapi.Mount{ContainerPath: "/dev/sgx", HostPath: filepath.Join(devDir, "sgx")})
	}
	kind := func(kind string, limit uint) *resource {
		host := filepath.Join(devDir, "sgx_"+kind)
		var ids []string
		if exists(host) && exists(filepath.Join(devDir, "sgx_enclave")) && exists(filepath.Join(devDir, "sgx_provision")) {
			for i := uint(0); i < limit; i++ {
				ids = append(ids, fmt.Sprintf("sgx-%s-%d", kind, i))
			}
		}
		return &resource{
			name:    "sgx.intel.com/" + kind,
			socket:  "sgx-" + kind + ".sock",
			devices: healthy(ids),
			allocate: func([]string) (*pluginapi.ContainerAllocateResponse, error) {
				return &pluginapi.ContainerAllocateResponse{
					Devices: []*pluginapi.DeviceSpec{{ContainerPath: "/dev/sgx_" + kind, HostPath: host, Permissions: "rw"}},
					Mounts:  mounts,
				}, nil
			},
		}
	}
	return []*resource{kind("enclave", enclaveLimit), kind("provision", provisionLimit)}
}
