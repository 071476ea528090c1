// conformance answers whether a Windows node's kubelet, kube-proxy or kube-log-runner would start with a
// given command line and config file, using Kubernetes' own code at the pinned version
// (hack/versions.env): the kubelet's flag set and config loader (k8s.io/kubernetes/cmd/kubelet/app/options,
// pkg/kubelet/kubeletconfig/configfiles, pkg/kubelet/apis/config/validation) and kube-proxy's options
// (k8s.io/kubernetes/cmd/kube-proxy/app.Options, pkg/proxy/apis/config/validation).
//
// The checker is built for Linux, so the few rules and flags upstream compiles only into Windows builds
// are restated here, each citing its upstream file; tests/unit/test_conformance_upstream.py ties every
// restated list to the upstream source text at the pinned version.
//
// Input (stdin, JSON): [{"name", "argv": [exe, args...], "files": {"C:\\k\\x.yaml": "content"}}...].
// argv[0] names the program by its base name (kubelet.exe, kube-proxy.exe, kube-log-runner.exe).
// Output (stdout, JSON): [{"name", "ok", "component", "error", "flag"}...] in input order; "flag" is the
// offending command-line flag when the refusal is about one.
package main

import (
	"context"
	"encoding/json"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	cliflag "k8s.io/component-base/cli/flag"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	proxyconfig "k8s.io/kubernetes/pkg/proxy/apis/config"
	proxyscheme "k8s.io/kubernetes/pkg/proxy/apis/config/scheme"
	proxyvalidation "k8s.io/kubernetes/pkg/proxy/apis/config/validation"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
)

type checkCase struct {
	Name  string            `json:"name"`
	Argv  []string          `json:"argv"`
	Files map[string]string `json:"files"`
}

type verdict struct {
	Name      string `json:"name"`
	OK        bool   `json:"ok"`
	Component string `json:"component"`
	Error     string `json:"error,omitempty"`
	Flag      string `json:"flag,omitempty"`
	// Crash: the checker itself failed on this case; no verdict.
	Crash bool `json:"crash,omitempty"`
}

// refusal is what the real process would print before exiting non-zero.
type refusal struct {
	component string
	msg       string
	flag      string
}

func (r *refusal) Error() string { return r.msg }

var (
	unknownFlag = regexp.MustCompile(`unknown (?:shorthand )?flag: '?(-{1,2}[^\s']+)`)
	badFlag     = regexp.MustCompile(`invalid argument "[^"]*" for "(-{1,2}[^"]+)" flag`)
	goFlagBad   = regexp.MustCompile(`flag provided but not defined: (-{1,2}\S+)|invalid value "[^"]*" for flag (-{1,2}\S+)`)
)

func flagOf(err error) string {
	s := err.Error()
	if m := unknownFlag.FindStringSubmatch(s); m != nil {
		return strings.SplitN(m[1], "=", 2)[0]
	}
	if m := badFlag.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	if m := goFlagBad.FindStringSubmatch(s); m != nil {
		if m[1] != "" {
			return m[1]
		}
		return m[2]
	}
	return ""
}

func component(exe string) string {
	base := strings.ToLower(exe[strings.LastIndexAny(exe, `\/`)+1:])
	return strings.TrimSuffix(base, ".exe")
}

// files maps the Windows paths the command line names to a scratch directory on this machine.
type files struct {
	dir     string
	content map[string]string
}

func (f files) local(winPath string) (string, error) {
	content, ok := f.content[winPath]
	if !ok {
		return "", fmt.Errorf("open %s: The system cannot find the file specified", winPath)
	}
	tmp, err := os.CreateTemp(f.dir, "file-*.yaml")
	if err != nil {
		return "", err
	}
	if _, err := tmp.WriteString(content); err != nil {
		return "", err
	}
	return tmp.Name(), tmp.Close()
}

func check(c checkCase, f files) error {
	if len(c.Argv) == 0 {
		return &refusal{msg: "empty command line"}
	}
	switch comp := component(c.Argv[0]); comp {
	case "kubelet":
		return checkKubelet(c.Argv[1:], f)
	case "kube-proxy":
		return checkKubeProxy(c.Argv[1:], f)
	case "kube-log-runner":
		return checkLogRunner(c.Argv[1:], f)
	default:
		return &refusal{component: comp, msg: fmt.Sprintf("no conformance rules for %q", c.Argv[0])}
	}
}

// --- kubelet ---------------------------------------------------------------------------------------

// addWindowsKubeletFlags restates k8s.io/kubernetes/cmd/kubelet/app/options/osflags_windows.go (v1.37.2),
// compiled only into Windows builds.
func addWindowsKubeletFlags(f *options.KubeletFlags, fs *pflag.FlagSet) {
	fs.BoolVar(&f.WindowsService, "windows-service", f.WindowsService, "Enable Windows Service Control Manager API integration")
	fs.StringVar(&f.WindowsPriorityClass, "windows-priorityclass", "NORMAL_PRIORITY_CLASS", "Set the PriorityClass associated with kubelet process")
}

// windowsPriorityClasses restates getPriorityValue of k8s.io/kubernetes/cmd/kubelet/app/init_windows.go
// (v1.37.2): initForOS refuses any other name before the kubelet talks to the SCM.
var windowsPriorityClasses = []string{
	"IDLE_PRIORITY_CLASS",
	"BELOW_NORMAL_PRIORITY_CLASS",
	"NORMAL_PRIORITY_CLASS",
	"ABOVE_NORMAL_PRIORITY_CLASS",
	"HIGH_PRIORITY_CLASS",
	"REALTIME_PRIORITY_CLASS",
}

// validateKubeletWindows restates the refusals of validateKubeletOSConfiguration in
// k8s.io/kubernetes/pkg/kubelet/apis/config/validation/validation_windows.go (v1.37.2); its other
// checks only log warnings.
func validateKubeletWindows(kc *kubeletconfig.KubeletConfiguration) error {
	if kc.SingleProcessOOMKill != nil {
		return fmt.Errorf("invalid configuration: singleProcessOOMKill is not supported on Windows")
	}
	if kc.UserNamespaces != nil {
		return fmt.Errorf("invalid configuration: userNamespaces is not supported on Windows")
	}
	if len(kc.DefaultPodSysctls) > 0 {
		return fmt.Errorf("invalid configuration: defaultPodSysctls is not supported on Windows")
	}
	return nil
}

func kubeletFlagSet(kf *options.KubeletFlags, kc *kubeletconfig.KubeletConfiguration) *pflag.FlagSet {
	// As NewKubeletCommand in k8s.io/kubernetes/cmd/kubelet/app/server.go builds its cleanFlagSet.
	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	fs.SetOutput(io.Discard)
	kf.AddFlags(fs)
	addWindowsKubeletFlags(kf, fs)
	options.AddKubeletConfigFlags(fs, kc)
	options.AddGlobalFlags(fs)
	fs.BoolP("help", "h", false, "help for kubelet")
	return fs
}

// checkKubelet follows the RunE of NewKubeletCommand (cmd/kubelet/app/server.go, v1.37.2) up to the
// point where the kubelet starts running, then initForOS (init_windows.go).
func checkKubelet(args []string, f files) error {
	r := func(err error, flag string) error {
		if flag == "" {
			flag = flagOf(err)
		}
		return &refusal{component: "kubelet", msg: err.Error(), flag: flag}
	}
	kf := options.NewKubeletFlags()
	kc, err := options.NewKubeletConfiguration()
	if err != nil {
		return r(err, "")
	}
	fs := kubeletFlagSet(kf, kc)
	if err := fs.Parse(args); err != nil {
		return r(fmt.Errorf("failed to parse kubelet flag: %w", err), "")
	}
	if cmds := fs.Args(); len(cmds) > 0 {
		return r(fmt.Errorf("unknown command %+s", cmds[0]), "")
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(kc.FeatureGates); err != nil {
		return r(err, "--feature-gates")
	}
	if err := options.ValidateKubeletFlags(kf); err != nil {
		return r(fmt.Errorf("failed to validate kubelet flags: %w", err), "")
	}
	if kf.KubeletConfigFile != "" {
		local, err := f.local(kf.KubeletConfigFile)
		if err != nil {
			return r(fmt.Errorf("failed to load kubelet config file, path: %s, error: %w", kf.KubeletConfigFile, err), "--config")
		}
		loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, local)
		if err != nil {
			return r(err, "--config")
		}
		kc, err = loader.Load(context.Background())
		if err != nil {
			return r(fmt.Errorf("failed to load kubelet config file, path: %s, error: %w", kf.KubeletConfigFile, err), "--config")
		}
		// kubeletConfigFlagPrecedence (server.go): flags win over the file.
		pfs := pflag.NewFlagSet("", pflag.ContinueOnError)
		pfs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
		pfs.SetOutput(io.Discard)
		globals := pflag.NewFlagSet("", pflag.ContinueOnError)
		options.AddGlobalFlags(globals)
		globals.VisitAll(func(fl *pflag.Flag) { pfs.VarP(cliflag.NoOp{}, fl.Name, fl.Shorthand, fl.Usage) })
		throwaway := options.NewKubeletFlags()
		throwaway.AddFlags(pfs)
		addWindowsKubeletFlags(throwaway, pfs)
		original := kc.FeatureGates
		options.AddKubeletConfigFlags(pfs, kc)
		if err := pfs.Parse(args); err != nil {
			return r(fmt.Errorf("failed to precedence kubeletConfigFlag: %w", err), "")
		}
		for k, v := range original {
			if _, ok := kc.FeatureGates[k]; !ok {
				kc.FeatureGates[k] = v
			}
		}
		if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(kc.FeatureGates); err != nil {
			return r(err, "--feature-gates")
		}
	}
	if errs := logsapi.Validate(&kc.Logging, utilfeature.DefaultFeatureGate, field.NewPath("logging")); len(errs) > 0 {
		return r(fmt.Errorf("initialize logging: %v", errs.ToAggregate()), "")
	}
	if err := validateKubeletWindows(kc); err != nil {
		return r(fmt.Errorf("failed to validate kubelet configuration, error: %w", err), "")
	}
	// validation_linux.go, compiled into this Linux build in place of validation_windows.go, refuses
	// FailCgroupV1 depending on the cgroup version of the machine running the check; Windows has no
	// cgroups, so that host-dependent rule must not decide a Windows verdict.
	kc.FailCgroupV1 = false
	if err := kubeletvalidation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		return r(fmt.Errorf("failed to validate kubelet configuration, error: %w", err), "")
	}
	known := false
	for _, pc := range windowsPriorityClasses {
		known = known || pc == kf.WindowsPriorityClass
	}
	if !known {
		return r(fmt.Errorf("failed OS init: unknown priority class %s", kf.WindowsPriorityClass), "--windows-priorityclass")
	}
	return nil
}

// --- kube-proxy ------------------------------------------------------------------------------------

// windowsProxyFlags restates (*Options).addOSFlags of k8s.io/kubernetes/cmd/kube-proxy/app/init_windows.go
// (v1.37.2). Their targets are private to the app package; with --config (the only way winnode runs
// kube-proxy) Complete replaces the flag-built configuration by the file's anyway.
type windowsProxyFlags struct {
	runAsService, enableDSR, forwardHealthCheckVip bool
	sourceVip, networkName, rootHnsEndpointName    string
}

func (w *windowsProxyFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&w.runAsService, "windows-service", false, "Enable Windows Service Control Manager API integration")
	fs.StringVar(&w.sourceVip, "source-vip", "", "The IP address of the source VIP for non-DSR.")
	fs.StringVar(&w.networkName, "network-name", "", "The name of the cluster network.")
	fs.BoolVar(&w.enableDSR, "enable-dsr", false, "If true make kube-proxy apply DSR policies for service VIP")
	fs.StringVar(&w.rootHnsEndpointName, "root-hnsendpoint-name", "cbr0", "The name of the hns endpoint name for root namespace attached to l2bridge")
	fs.BoolVar(&w.forwardHealthCheckVip, "forward-healthcheck-vip", false, "If true forward service VIP for health check port")
}

// checkKubeProxy follows the RunE of NewProxyCommand (cmd/kube-proxy/app/server.go, v1.37.2).
func checkKubeProxy(args []string, f files) error {
	r := func(err error, flag string) error {
		if flag == "" {
			flag = flagOf(err)
		}
		return &refusal{component: "kube-proxy", msg: err.Error(), flag: flag}
	}
	opts := proxyapp.NewOptions()
	// cobra's flag set for the command: not normalised, errors returned.
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	opts.AddFlags(fs)
	var win windowsProxyFlags
	win.add(fs)
	fs.AddGoFlagSet(goflag.CommandLine)
	if err := fs.Parse(args); err != nil {
		return r(err, "")
	}
	for _, a := range fs.Args() {
		if a != "" {
			return r(fmt.Errorf("\"kube-proxy\" does not take any arguments, got %q", fs.Args()), "")
		}
	}
	if opts.ConfigFile != "" {
		local, err := f.local(opts.ConfigFile)
		if err != nil {
			return r(fmt.Errorf("failed complete: %w", err), "--config")
		}
		opts.ConfigFile = local
	}
	if err := opts.Complete(fs); err != nil {
		return r(fmt.Errorf("failed complete: %w", err), "")
	}
	// The fully resolved configuration, written by the real encoder (--write-config-to).
	resolved := filepath.Join(f.dir, "kube-proxy-resolved.yaml")
	opts.WriteConfigTo = resolved
	if err := opts.Run(context.Background()); err != nil {
		return r(err, "")
	}
	data, err := os.ReadFile(resolved)
	if err != nil {
		return r(err, "")
	}
	obj, _, err := proxyscheme.Codecs.UniversalDecoder().Decode(data, nil, nil)
	if err != nil {
		return r(err, "")
	}
	cfg, ok := obj.(*proxyconfig.KubeProxyConfiguration)
	if !ok {
		return r(fmt.Errorf("unexpected config type %T", obj), "")
	}
	var errs field.ErrorList
	for _, e := range proxyvalidation.Validate(cfg) {
		// validateProxyMode picks the Linux modes in this Linux build; the Windows rule follows.
		if e.Field == "KubeProxyConfiguration.Mode.ProxyMode" {
			continue
		}
		errs = append(errs, e)
	}
	// validateProxyModeWindows, k8s.io/kubernetes/pkg/proxy/apis/config/validation/validation.go (v1.37.2);
	// platformApplyDefaults (cmd/kube-proxy/app/server_windows.go) turns blank into kernelspace.
	if cfg.Mode != "" && cfg.Mode != proxyconfig.ProxyModeKernelspace && !modeWasBlankDefaulted(opts, fs, cfg) {
		errs = append(errs, field.Invalid(field.NewPath("KubeProxyConfiguration", "Mode", "ProxyMode"), string(cfg.Mode),
			"must be kernelspace or blank (blank means the most-available proxy [currently 'kernelspace'])"))
	}
	if len(errs) > 0 {
		return r(fmt.Errorf("failed validate: %w", errs.ToAggregate()), "")
	}
	return nil
}

// modeWasBlankDefaulted: the Linux platformApplyDefaults turned a blank mode into iptables; on Windows
// blank means kernelspace, so that iptables is not the file's choice.
func modeWasBlankDefaulted(opts *proxyapp.Options, fs *pflag.FlagSet, cfg *proxyconfig.KubeProxyConfiguration) bool {
	if cfg.Mode != proxyconfig.ProxyModeIPTables {
		return false
	}
	if opts.ConfigFile == "" {
		// Complete defaulted the flag's own target, so ask whether the command line set it.
		return !fs.Changed("proxy-mode")
	}
	data, err := os.ReadFile(opts.ConfigFile)
	if err != nil {
		return false
	}
	obj, _, err := proxyscheme.Codecs.UniversalDecoder().Decode(data, nil, nil)
	if err != nil {
		return false
	}
	orig, ok := obj.(*proxyconfig.KubeProxyConfiguration)
	return ok && orig.Mode == ""
}

// --- kube-log-runner -------------------------------------------------------------------------------

// checkLogRunner restates initFlags and the checks of configureAndRun in
// k8s.io/component-base/logs/kube-log-runner/kube-log-runner.go (v0.37.2; package main, so not importable),
// then checks the command it runs.
func checkLogRunner(args []string, f files) error {
	r := func(err error, flag string) error {
		if flag == "" {
			flag = flagOf(err)
		}
		return &refusal{component: "kube-log-runner", msg: err.Error(), flag: flag}
	}
	fs := goflag.NewFlagSet("kube-log-runner", goflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	logFileSize := &resource.QuantityValue{}
	fs.Duration("flush-interval", 0, "interval to flush log file to disk")
	fs.String("log-file", "", "If non-empty, save stdout to this file")
	fs.Var(logFileSize, "log-file-size", "rotate log file when it reaches this size")
	logFileAge := fs.Duration("log-file-age", 0, "remove log files older than this duration")
	fs.Bool("also-stdout", false, "log to standard output as well as the log file")
	fs.Bool("redirect-stderr", true, "treat stderr same as stdout")
	if err := fs.Parse(args); err != nil {
		return r(err, "")
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return r(fmt.Errorf("not enough arguments to run"), "")
	}
	if logFileSize.Value() < 0 {
		return r(fmt.Errorf("log-file-size must be non-negative quantity"), "-log-file-size")
	}
	if *logFileAge < 0 {
		return r(fmt.Errorf("log-file-age must be non-negative"), "-log-file-age")
	}
	return check(checkCase{Argv: rest}, f)
}

// --- driver ----------------------------------------------------------------------------------------

// runOne checks one case in this process. Each case runs in a process of its own (see main) because the
// kubelet and kube-proxy keep feature gates and flag registrations in process globals.
func runOne() {
	var c checkCase
	if err := json.NewDecoder(os.Stdin).Decode(&c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer os.RemoveAll(dir)
	v := verdict{Name: c.Name, OK: true}
	if len(c.Argv) > 0 {
		v.Component = component(c.Argv[0])
	}
	if err := check(c, files{dir: dir, content: c.Files}); err != nil {
		v.OK = false
		v.Error = err.Error()
		if ref, ok := err.(*refusal); ok {
			v.Flag = ref.flag
			if ref.component != "" {
				v.Component = ref.component
			}
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(v)
}

func main() {
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	if len(os.Args) > 1 && os.Args[1] == "--one" {
		runOne()
		return
	}
	var cases []checkCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "reading cases:", err)
		os.Exit(2)
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := make([]verdict, 0, len(cases))
	for _, c := range cases {
		in, _ := json.Marshal(c)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, self, "--one")
		cmd.Stdin = strings.NewReader(string(in))
		cmd.Stderr = io.Discard
		raw, err := cmd.Output()
		cancel()
		var v verdict
		if err == nil {
			err = json.Unmarshal(raw, &v)
		}
		if err != nil {
			v = verdict{Name: c.Name, Crash: true, Error: fmt.Sprintf("checker failed on this case: %v", err)}
		}
		out = append(out, v)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
