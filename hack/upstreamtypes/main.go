// upstreamtypes answers whether what winnode sends to a Windows host's network stack would be decoded by
// the code that reads it, using that code's own Go types (hack/build-upstreamtypes.sh names the versions
// and how types that build only for Windows are extracted into gen/):
//
//	cni-config          a CNI network configuration, as win-bridge / win-overlay load it
//	                    (containernetworking/plugins plugins/main/windows/*/*_windows.go loadNetConf: their
//	                    NetConf over pkg/hns NetConf and cni pkg/types NetConf; the ipam section as host-local
//	                    loads it, plugins/ipam/host-local/backend/allocator/config.go LoadIPAMConfig; every
//	                    policy's value as an HNS v1 policy (apiVersion 1) or an hcn EndpointPolicy (apiVersion 2)
//	                    with the settings type of its policy type)
//	hns-v1-network      POST /networks/ through HNSCall (hcsshim internal/hns/hnsnetwork.go HNSNetwork; policies
//	                    as internal/hns/hnspolicy.go's types)
//	hns-v1-endpoint     POST /endpoints/ (internal/hns/hnsendpoint.go HNSEndpoint)
//	hns-v1-attach       POST /endpoints/<id>/attach (internal/hns/hnsendpoint.go EndpointAttachDetachRequest)
//	hns-v2-network      HcnCreateNetwork (hcn/hcnnetwork.go HostComputeNetwork, hcn/hcnpolicy.go settings)
//	hns-v2-modify       HcnModifyNetwork (hcn/hcnnetwork.go ModifyNetworkSettingRequest, PolicyNetworkRequest)
//	flannel-node        a Node's flannel annotations, as flannel's kube subnet manager turns them into a lease
//	                    (flannel pkg/subnet/kube/kube.go nodeToLease; pkg/lease LeaseAttrs) and its vxlan
//	                    backend decodes the lease's backend data, on Linux (pkg/backend/vxlan/vxlan_network.go)
//	                    and on Windows (vxlan_network_windows.go) vxlanLeaseAttrs
//
// Decoding is strict (encoding/json with DisallowUnknownFields, trailing data refused): a field the upstream
// type does not have is a field the real component would silently drop, which is a bug on our side.
// For HNS requests, "hnsVersion" (the host's HNS version, GET /globals/version) is checked against hcsshim's
// own feature version ranges (hcn/hcnglobals.go): the v2 API, RemoteSubnetRoute, HostRoute, VxlanPort.
//
// Input (stdin, JSON): [{"name", "kind", "doc": "<the text sent>", "hnsVersion": {"Major", "Minor"}}...].
// Output (stdout, JSON): [{"name", "ok", "kind", "error"}...] in input order.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	cnitypes "github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"winnode.io/hack/upstreamtypes/gen/cnihns"
	"winnode.io/hack/upstreamtypes/gen/flannelip"
	"winnode.io/hack/upstreamtypes/gen/flannellease"
	"winnode.io/hack/upstreamtypes/gen/flannelvxlan"
	"winnode.io/hack/upstreamtypes/gen/flannelvxlanwin"
	"winnode.io/hack/upstreamtypes/gen/hcn"
	"winnode.io/hack/upstreamtypes/gen/hns"
	"winnode.io/hack/upstreamtypes/gen/winbridge"
	"winnode.io/hack/upstreamtypes/gen/winoverlay"
)

type checkCase struct {
	Name       string       `json:"name"`
	Kind       string       `json:"kind"`
	Doc        string       `json:"doc"`
	HNSVersion *hcn.Version `json:"hnsVersion"`
}

type verdict struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Kind  string `json:"kind"`
	Error string `json:"error,omitempty"`
	Crash bool   `json:"crash,omitempty"`
}

// strict decodes data into out as encoding/json does, refusing fields out's type does not declare.
func strict(data []byte, out any, what string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%s: data after the JSON value", what)
	}
	return nil
}

// typed decodes a {"Type": ...} document to learn its type.
func typeOf(data []byte) (string, error) {
	var probe struct {
		Type string `json:"Type"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return "", err
	}
	return probe.Type, nil
}

// --- HNS v1 (hcsshim internal/hns) -----------------------------------------------------------------------

// v1Policies: the policy types of HNS v1 (internal/hns/hnspolicy.go PolicyType) and the struct each decodes
// into. The JSON is flat ({"Type": "VSID", "VSID": 4096}); HNS v1 has no "Settings" and no VxlanPort.
func v1Policy(data []byte, where string) error {
	t, err := typeOf(data)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	var out any
	switch hns.PolicyType(t) {
	case hns.VSID:
		out = &hns.VsidPolicy{}
	case hns.VLAN:
		out = &hns.VlanPolicy{}
	case hns.PA:
		out = &hns.PaPolicy{}
	case hns.Nat:
		out = &hns.NatPolicy{}
	case hns.QOS:
		out = &hns.QosPolicy{}
	case hns.Isolation:
		out = &hns.IsolationPolicy{}
	case hns.OutboundNat:
		out = &hns.OutboundNatPolicy{}
	case hns.Proxy:
		out = &hns.ProxyPolicy{}
	case hns.ACL:
		out = &hns.ACLPolicy{}
	case hns.Route:
		out = &hns.RoutePolicy{}
	case hns.ExternalLoadBalancer:
		out = &hns.ELBPolicy{}
	default:
		return fmt.Errorf("%s: HNS v1 has no policy type %q (hcsshim internal/hns/hnspolicy.go PolicyType)", where, t)
	}
	return strict(data, out, where+" "+t)
}

var networkTypes = map[hcn.NetworkType]bool{
	hcn.NAT: true, hcn.Transparent: true, hcn.L2Bridge: true, hcn.L2Tunnel: true, hcn.ICS: true,
	hcn.Private: true, hcn.Overlay: true,
}

func checkV1Network(doc []byte) error {
	var n hns.HNSNetwork
	if err := strict(doc, &n, "HNSNetwork"); err != nil {
		return err
	}
	if !networkTypes[hcn.NetworkType(n.Type)] {
		return fmt.Errorf("HNSNetwork: unknown network type %q", n.Type)
	}
	for i, p := range n.Policies {
		if err := v1Policy(p, fmt.Sprintf("HNSNetwork.Policies[%d]", i)); err != nil {
			return err
		}
	}
	for i, s := range n.Subnets {
		for j, p := range s.Policies {
			if err := v1Policy(p, fmt.Sprintf("HNSNetwork.Subnets[%d].Policies[%d]", i, j)); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkV1Endpoint(doc []byte) error {
	var e hns.HNSEndpoint
	if err := strict(doc, &e, "HNSEndpoint"); err != nil {
		return err
	}
	for i, p := range e.Policies {
		if err := v1Policy(p, fmt.Sprintf("HNSEndpoint.Policies[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

func checkV1Attach(doc []byte) error {
	var r hns.EndpointAttachDetachRequest
	if err := strict(doc, &r, "EndpointAttachDetachRequest"); err != nil {
		return err
	}
	switch r.SystemType {
	case hns.ContainerType, hns.VirtualMachineType, hns.HostType:
		return nil
	}
	return fmt.Errorf("EndpointAttachDetachRequest: unknown SystemType %q", r.SystemType)
}

// --- HNS v2 (hcsshim hcn) ----------------------------------------------------------------------------------

func inRange(v hcn.Version, ranges hcn.VersionRanges) bool {
	for _, r := range ranges {
		lo := v.Major > r.MinVersion.Major || (v.Major == r.MinVersion.Major && v.Minor >= r.MinVersion.Minor)
		hi := v.Major < r.MaxVersion.Major || (v.Major == r.MaxVersion.Major && v.Minor <= r.MaxVersion.Minor)
		if lo && hi {
			return true
		}
	}
	return false
}

func needs(v *hcn.Version, ranges hcn.VersionRanges, what, rangeName string) error {
	if v != nil && !inRange(*v, ranges) {
		return fmt.Errorf("%s needs HNS %s (hcsshim hcn/hcnglobals.go %s); this host's HNS is %d.%d",
			what, describe(ranges), rangeName, v.Major, v.Minor)
	}
	return nil
}

func describe(ranges hcn.VersionRanges) string {
	var parts []string
	for _, r := range ranges {
		parts = append(parts, fmt.Sprintf("%d.%d or later", r.MinVersion.Major, r.MinVersion.Minor))
	}
	return strings.Join(parts, ", ")
}

func v2NetworkPolicy(p hcn.NetworkPolicy, where string, v *hcn.Version) error {
	var out any
	switch p.Type {
	case hcn.SourceMacAddress:
		out = &hcn.SourceMacAddressNetworkPolicySetting{}
	case hcn.NetAdapterName:
		out = &hcn.NetAdapterNameNetworkPolicySetting{}
	case hcn.VSwitchExtension:
		out = &hcn.VSwitchExtensionNetworkPolicySetting{}
	case hcn.DrMacAddress:
		out = &hcn.DrMacAddressNetworkPolicySetting{}
	case hcn.AutomaticDNS:
		out = &hcn.AutomaticDNSNetworkPolicySetting{}
	case hcn.InterfaceConstraint:
		out = &hcn.InterfaceConstraintPolicySetting{}
	case hcn.ProviderAddress:
		out = &hcn.ProviderAddressEndpointPolicySetting{}
	case hcn.RemoteSubnetRoute:
		if err := needs(v, hcn.RemoteSubnetVersion, "a RemoteSubnetRoute policy", "RemoteSubnetVersion"); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		out = &hcn.RemoteSubnetRoutePolicySetting{}
	case hcn.VxlanPort:
		if err := needs(v, hcn.VxlanPortVersion, "a VxlanPort policy", "VxlanPortVersion"); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		out = &hcn.VxlanPortPolicySetting{}
	case hcn.HostRoute:
		if err := needs(v, hcn.HostRouteVersion, "a HostRoute policy", "HostRouteVersion"); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		// hcsshim sends HostRoute with empty settings (hcn/hcnsupport.go, flannel's vxlan_network_windows.go).
		if len(p.Settings) == 0 || string(p.Settings) == "{}" || string(p.Settings) == "null" {
			return nil
		}
		return fmt.Errorf("%s: a HostRoute policy has no settings", where)
	case hcn.SetPolicy:
		out = &hcn.SetPolicySetting{}
	case hcn.LayerConstraint:
		out = &hcn.LayerConstraintNetworkPolicySetting{}
	case hcn.NetworkACL:
		out = &hcn.NetworkACLPolicySetting{}
	default:
		return fmt.Errorf("%s: hcn has no network policy type %q (hcsshim hcn/hcnpolicy.go NetworkPolicyType)", where, p.Type)
	}
	if len(p.Settings) == 0 {
		return fmt.Errorf("%s: a %s policy needs Settings", where, p.Type)
	}
	return strict(p.Settings, out, fmt.Sprintf("%s %s settings", where, p.Type))
}

func v2SubnetPolicy(data []byte, where string) error {
	var p hcn.SubnetPolicy
	if err := strict(data, &p, where); err != nil {
		return err
	}
	var out any
	switch p.Type {
	case hcn.VSID:
		out = &hcn.VsidPolicySetting{}
	case hcn.VLAN:
		out = &hcn.VlanPolicySetting{}
	default:
		return fmt.Errorf("%s: hcn has no subnet policy type %q (hcsshim hcn/hcnpolicy.go SubnetPolicyType)", where, p.Type)
	}
	return strict(p.Settings, out, fmt.Sprintf("%s %s settings", where, p.Type))
}

func checkV2Network(doc []byte, v *hcn.Version) error {
	if err := needs(v, hcn.V2ApiSupport, "the hcn (v2) API", "V2ApiSupport"); err != nil {
		return err
	}
	var n hcn.HostComputeNetwork
	if err := strict(doc, &n, "HostComputeNetwork"); err != nil {
		return err
	}
	if n.SchemaVersion.Major != 2 {
		return fmt.Errorf("HostComputeNetwork: SchemaVersion %d.%d; hcn speaks schema 2 (hcn/hcn.go V2SchemaVersion)",
			n.SchemaVersion.Major, n.SchemaVersion.Minor)
	}
	if !networkTypes[n.Type] {
		return fmt.Errorf("HostComputeNetwork: unknown network type %q", n.Type)
	}
	for i, p := range n.Policies {
		if err := v2NetworkPolicy(p, fmt.Sprintf("HostComputeNetwork.Policies[%d]", i), v); err != nil {
			return err
		}
	}
	for i, ipam := range n.Ipams {
		for j, s := range ipam.Subnets {
			for k, p := range s.Policies {
				if err := v2SubnetPolicy(p, fmt.Sprintf("HostComputeNetwork.Ipams[%d].Subnets[%d].Policies[%d]", i, j, k)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkV2Modify(doc []byte, v *hcn.Version) error {
	if err := needs(v, hcn.V2ApiSupport, "the hcn (v2) API", "V2ApiSupport"); err != nil {
		return err
	}
	var r hcn.ModifyNetworkSettingRequest
	if err := strict(doc, &r, "ModifyNetworkSettingRequest"); err != nil {
		return err
	}
	switch r.RequestType {
	case hcn.RequestTypeAdd, hcn.RequestTypeRemove, hcn.RequestTypeUpdate, hcn.RequestTypeRefresh:
	default:
		return fmt.Errorf("ModifyNetworkSettingRequest: unknown RequestType %q", r.RequestType)
	}
	if r.ResourceType != hcn.NetworkResourceTypePolicy {
		return fmt.Errorf("ModifyNetworkSettingRequest: ResourceType %q; winnode modifies policies only", r.ResourceType)
	}
	var policies hcn.PolicyNetworkRequest
	if err := strict(r.Settings, &policies, "PolicyNetworkRequest"); err != nil {
		return err
	}
	for i, p := range policies.Policies {
		if err := v2NetworkPolicy(p, fmt.Sprintf("PolicyNetworkRequest.Policies[%d]", i), v); err != nil {
			return err
		}
	}
	return nil
}

// --- CNI (containernetworking/plugins) -----------------------------------------------------------------------

func checkCNIConfig(doc []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(doc, &fields); err != nil {
		return fmt.Errorf("CNI config: %w", err)
	}
	// cni pkg/types IPAM holds only "type"; the rest of the section is the IPAM plugin's, checked below
	// as host-local reads it.
	ipam := fields["ipam"]
	var ipamType cnitypes.IPAM
	if err := json.Unmarshal(ipam, &ipamType); err != nil || ipamType.Type == "" {
		return errors.New("CNI config: an ipam section with a type is needed")
	}
	fields["ipam"], _ = json.Marshal(ipamType)
	rest, _ := json.Marshal(fields)
	var base *cnihns.NetConf
	var name string
	if err := json.Unmarshal(fields["type"], &name); err != nil {
		return fmt.Errorf("CNI config: type: %w", err)
	}
	switch name {
	case "win-bridge":
		var n winbridge.NetConf
		if err := strict(rest, &n, "win-bridge NetConf"); err != nil {
			return err
		}
		base = &n.NetConf
	case "win-overlay":
		var n winoverlay.NetConf
		if err := strict(rest, &n, "win-overlay NetConf"); err != nil {
			return err
		}
		base = &n.NetConf
	default:
		return fmt.Errorf("CNI config: type %q is not a plugin winnode installs (win-bridge, win-overlay)", name)
	}
	if base.ApiVersion != 1 && base.ApiVersion != 2 {
		// pkg/hns NetConf: "select one of [1, 2]"; 0 means 1 to the plugins.
		if base.ApiVersion != 0 {
			return fmt.Errorf("CNI config: apiVersion %d (pkg/hns NetConf: one of 1, 2)", base.ApiVersion)
		}
	}
	for i, p := range base.Policies {
		where := fmt.Sprintf("CNI config policies[%d]", i)
		if !strings.EqualFold(p.Name, "EndpointPolicy") {
			// pkg/hns GetHNSEndpointPolicies / GetHostComputeEndpointPolicies skip any other name.
			return fmt.Errorf("%s: name %q is ignored by the plugins (only EndpointPolicy is read)", where, p.Name)
		}
		if base.ApiVersion == 2 {
			var ep hcn.EndpointPolicy
			if err := strict(p.Value, &ep, where); err != nil {
				return err
			}
			if err := v2EndpointPolicy(ep, where); err != nil {
				return err
			}
		} else if err := v1Policy(p.Value, where); err != nil {
			return err
		}
	}
	if ipamType.Type == "host-local" {
		var conf allocator.IPAMConfig
		if err := strict(ipam, &conf, "host-local ipam"); err != nil {
			return err
		}
		wrapped, _ := json.Marshal(map[string]json.RawMessage{"cniVersion": fields["cniVersion"], "name": fields["name"], "ipam": ipam})
		if _, _, err := allocator.LoadIPAMConfig(wrapped, ""); err != nil {
			return fmt.Errorf("host-local ipam: %w", err)
		}
	}
	return nil
}

func v2EndpointPolicy(p hcn.EndpointPolicy, where string) error {
	var out any
	switch p.Type {
	case hcn.PortMapping:
		out = &hcn.PortMappingPolicySetting{}
	case hcn.ACL:
		out = &hcn.AclPolicySetting{}
	case hcn.QOS:
		out = &hcn.QosPolicySetting{}
	case hcn.OutBoundNAT:
		out = &hcn.OutboundNatPolicySetting{}
	case hcn.SDNRoute:
		out = &hcn.SDNRoutePolicySetting{}
	case hcn.L4Proxy:
		out = &hcn.L4ProxyPolicySetting{}
	case hcn.L4WFPPROXY:
		out = &hcn.L4WfpProxyPolicySetting{}
	case hcn.PortName:
		out = &hcn.PortnameEndpointPolicySetting{}
	case hcn.EncapOverhead:
		out = &hcn.EncapOverheadEndpointPolicySetting{}
	case hcn.IOV:
		out = &hcn.IovPolicySetting{}
	case hcn.NetworkProviderAddress:
		out = &hcn.ProviderAddressEndpointPolicySetting{}
	case hcn.NetworkInterfaceConstraint:
		out = &hcn.InterfaceConstraintPolicySetting{}
	case hcn.TierAcl:
		out = &hcn.TierAclPolicySetting{}
	default:
		return fmt.Errorf("%s: hcn has no endpoint policy type %q (hcsshim hcn/hcnpolicy.go EndpointPolicyType)", where, p.Type)
	}
	return strict(p.Settings, out, fmt.Sprintf("%s %s settings", where, p.Type))
}

// --- flannel ------------------------------------------------------------------------------------------------

type flannelNode struct {
	Prefix      string            `json:"prefix"`
	Annotations map[string]string `json:"annotations"`
}

func checkFlannel(doc []byte) error {
	var n flannelNode
	if err := strict(doc, &n, "flannel node"); err != nil {
		return err
	}
	prefix := strings.TrimSuffix(n.Prefix, "/") + "/"
	// pkg/subnet/kube/kube.go nodeToLease (IPv4): PublicIP from public-ip, BackendData from backend-data.
	var attrs flannellease.LeaseAttrs
	var err error
	if attrs.PublicIP, err = flannelip.ParseIP4(n.Annotations[prefix+"public-ip"]); err != nil {
		return fmt.Errorf("flannel %spublic-ip: %w", prefix, err)
	}
	attrs.BackendType = n.Annotations[prefix+"backend-type"]
	attrs.BackendData = json.RawMessage(n.Annotations[prefix+"backend-data"])
	if n.Annotations[prefix+"kube-subnet-manager"] != "true" {
		return fmt.Errorf("flannel %skube-subnet-manager must be \"true\"", prefix)
	}
	switch attrs.BackendType {
	case "vxlan":
		// Both sides read a Windows node's lease: Linux agents (vxlan_network.go) and Windows ones.
		var linux flannelvxlan.LeaseAttrs
		if err := strict(attrs.BackendData, &linux, "vxlan backend-data (Linux vxlanLeaseAttrs)"); err != nil {
			return err
		}
		var windows flannelvxlanwin.LeaseAttrs
		if err := strict(attrs.BackendData, &windows, "vxlan backend-data (Windows vxlanLeaseAttrs)"); err != nil {
			return err
		}
		if len(linux.VtepMAC) != 6 {
			return errors.New("vxlan backend-data: VtepMAC is not a 6-byte MAC")
		}
	case "host-gw":
		// hostgw's lease carries no backend data (pkg/backend/hostgw: BackendType only).
		if len(attrs.BackendData) > 0 && string(attrs.BackendData) != "null" {
			return fmt.Errorf("host-gw backend-data: %s; host-gw has none", attrs.BackendData)
		}
	default:
		return fmt.Errorf("flannel %sbackend-type %q: winnode's peers speak vxlan or host-gw", prefix, attrs.BackendType)
	}
	// The lease as flannel stores it must survive its own JSON round trip.
	raw, err := json.Marshal(attrs)
	if err != nil {
		return err
	}
	var back flannellease.LeaseAttrs
	return strict(raw, &back, "LeaseAttrs")
}

func check(c checkCase) error {
	doc := []byte(c.Doc)
	switch c.Kind {
	case "cni-config":
		return checkCNIConfig(doc)
	case "hns-v1-network":
		return checkV1Network(doc)
	case "hns-v1-endpoint":
		return checkV1Endpoint(doc)
	case "hns-v1-attach":
		return checkV1Attach(doc)
	case "hns-v2-network":
		return checkV2Network(doc, c.HNSVersion)
	case "hns-v2-modify":
		return checkV2Modify(doc, c.HNSVersion)
	case "flannel-node":
		return checkFlannel(doc)
	}
	return fmt.Errorf("unknown kind %q", c.Kind)
}

func main() {
	var cases []checkCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "upstreamtypes: bad input:", err)
		os.Exit(2)
	}
	out := make([]verdict, 0, len(cases))
	for _, c := range cases {
		v := verdict{Name: c.Name, Kind: c.Kind, OK: true}
		func() {
			defer func() {
				if r := recover(); r != nil {
					v = verdict{Name: c.Name, Kind: c.Kind, Crash: true, Error: fmt.Sprint(r)}
				}
			}()
			if err := check(c); err != nil {
				v.OK, v.Error = false, err.Error()
			}
		}()
		out = append(out, v)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
