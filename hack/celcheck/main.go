// celcheck evaluates the CEL of our admission objects the way kube-apiserver does, with the apiserver's
// own packages at the pinned version (k8s.io/apiserver/pkg/admission/plugin/cel,
// .../webhook/matchconditions and .../policy/validating), so a test can ask what the apiserver would
// decide for a request of any shape, and whether any expression fails to evaluate on it.
//
// Input (stdin, JSON): {"webhooks": [ValidatingWebhook...], "policy": ValidatingAdmissionPolicy,
// "cases": [{"name", "operation", "kind": GVK, "resource": GVR, "subResource", "namespace", "name",
// "object", "oldObject", "dryRun"}]}. Output (stdout, JSON): for each case, per webhook the match
// result and per condition its value or error; for the policy its match result, decisions, and every
// variable, validation and messageExpression's value or error.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"

	celgo "github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types/ref"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/client-go/kubernetes/scheme"
)

type input struct {
	Webhooks []admissionregistrationv1.ValidatingWebhook        `json:"webhooks"`
	Policy   *admissionregistrationv1.ValidatingAdmissionPolicy `json:"policy"`
	Cases    []requestCase                                      `json:"cases"`
}

type requestCase struct {
	Name        string                      `json:"name"`
	Operation   string                      `json:"operation"`
	Kind        schema.GroupVersionKind     `json:"kind"`
	Resource    schema.GroupVersionResource `json:"resource"`
	SubResource string                      `json:"subResource"`
	Namespace   string                      `json:"namespace"`
	ObjectName  string                      `json:"objectName"`
	Object      json.RawMessage             `json:"object"`
	OldObject   json.RawMessage             `json:"oldObject"`
	DryRun      bool                        `json:"dryRun"`
}

type exprResult struct {
	Name       string `json:"name"`
	Expression string `json:"expression"`
	Value      any    `json:"value,omitempty"`
	Error      string `json:"error,omitempty"`
}

type matchResult struct {
	Matches         bool   `json:"matches"`
	Error           string `json:"error,omitempty"`
	FailedCondition string `json:"failedCondition,omitempty"`
}

type webhookResult struct {
	Name        string       `json:"name"`
	Match       matchResult  `json:"match"`
	Expressions []exprResult `json:"expressions"`
}

type decision struct {
	Action     string `json:"action"`
	Evaluation string `json:"evaluation"`
	Message    string `json:"message"`
	Reason     string `json:"reason"`
}

type policyResult struct {
	Match       matchResult  `json:"match"`
	Decisions   []decision   `json:"decisions"`
	Expressions []exprResult `json:"expressions"`
}

type caseResult struct {
	Name     string          `json:"name"`
	Error    string          `json:"error,omitempty"`
	Webhooks []webhookResult `json:"webhooks"`
	Policy   *policyResult   `json:"policy,omitempty"`
}

// expression is an ExpressionAccessor with the return types its place in the API allows.
type expression struct {
	name, expr string
	types      []*celgo.Type
}

func (e *expression) GetExpression() string      { return e.expr }
func (e *expression) ReturnTypes() []*celgo.Type { return e.types }
func (e *expression) GetName() string            { return e.name }

var boolType = []*celgo.Type{celgo.BoolType}
var stringType = []*celgo.Type{celgo.StringType}
var anyType = []*celgo.Type{celgo.AnyType}

// The declarations the apiserver gives each kind of expression: webhook matchConditions and policy
// expressions see the authorizer (webhook/accessors.go, policy/validating/plugin.go compilePolicy),
// messageExpressions do not.
var withAuthorizer = plugincel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: true}
var withoutAuthorizer = plugincel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: false}

func decode(raw json.RawMessage) (runtime.Object, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	// Typed objects, as the apiserver hands them to admission; kinds the scheme lacks stay unstructured.
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw, nil, nil)
	if err == nil {
		return obj, nil
	}
	u := &unstructured.Unstructured{}
	if uerr := u.UnmarshalJSON(raw); uerr != nil {
		return nil, fmt.Errorf("object: %v (typed: %v)", uerr, err)
	}
	return u, nil
}

func attributesFor(c requestCase) (*admission.VersionedAttributes, error) {
	obj, err := decode(c.Object)
	if err != nil {
		return nil, err
	}
	old, err := decode(c.OldObject)
	if err != nil {
		return nil, fmt.Errorf("oldObject: %w", err)
	}
	userInfo := &user.DefaultInfo{Name: "system:serviceaccount:default:tester", Groups: []string{"system:authenticated"}}
	attr := admission.NewAttributesRecord(obj, old, c.Kind, c.Namespace, c.ObjectName, c.Resource, c.SubResource,
		admission.Operation(c.Operation), nil, c.DryRun, userInfo)
	return &admission.VersionedAttributes{
		Attributes:         attr,
		VersionedKind:      c.Kind,
		VersionedObject:    admission.NewLazyObject(obj),
		VersionedOldObject: admission.NewLazyObject(old),
	}, nil
}

func valueOf(v ref.Val) any {
	if v == nil {
		return nil
	}
	switch v.Value().(type) {
	case bool, string, int64, uint64, float64:
		return v.Value()
	}
	// Lists and maps come back as JSON values; anything else as its CEL rendering.
	for _, t := range []reflect.Type{reflect.TypeOf([]any{}), reflect.TypeOf(map[string]any{})} {
		if native, err := v.ConvertToNative(t); err == nil {
			if _, err := json.Marshal(native); err == nil {
				return native
			}
		}
	}
	return fmt.Sprint(v.Value())
}

func evaluateEach(ctx context.Context, ev plugincel.ConditionEvaluator, exprs []*expression, va *admission.VersionedAttributes) []exprResult {
	out := make([]exprResult, len(exprs))
	request := plugincel.CreateAdmissionRequest(va.Attributes, metav1.GroupVersionResource(va.GetResource()), metav1.GroupVersionKind(va.VersionedKind))
	results, _, err := ev.ForInput(ctx, va, request, plugincel.OptionalVariableBindings{}, nil, celconfig.RuntimeCELCostBudget)
	for i, e := range exprs {
		out[i] = exprResult{Name: e.name, Expression: e.expr}
		if err != nil {
			out[i].Error = err.Error()
			continue
		}
		if ce := ev.CompilationErrors(); len(ce) > 0 {
			out[i].Error = fmt.Sprintf("compile: %v", ce)
		}
		if results[i].Error != nil {
			out[i].Error = results[i].Error.Error()
		} else if out[i].Error == "" {
			out[i].Value = valueOf(results[i].EvalResult)
		}
	}
	return out
}

func toMatch(r matchconditions.MatchResult) matchResult {
	m := matchResult{Matches: r.Matches, FailedCondition: r.FailedConditionName}
	if r.Error != nil {
		m.Error = r.Error.Error()
	}
	return m
}

// compiledWebhook holds one webhook entry compiled as webhook/accessors.go does, plus each condition
// on its own so every one is evaluated whatever the others say.
type compiledWebhook struct {
	name    string
	matcher matchconditions.Matcher
	each    plugincel.ConditionEvaluator
	exprs   []*expression
}

func compileWebhook(w admissionregistrationv1.ValidatingWebhook) *compiledWebhook {
	compiler := plugincel.NewConditionCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	conds := make([]plugincel.ExpressionAccessor, len(w.MatchConditions))
	exprs := make([]*expression, len(w.MatchConditions))
	each := make([]plugincel.ExpressionAccessor, len(w.MatchConditions))
	for i, mc := range w.MatchConditions {
		conds[i] = &matchconditions.MatchCondition{Name: mc.Name, Expression: mc.Expression}
		exprs[i] = &expression{mc.Name, mc.Expression, boolType}
		each[i] = exprs[i]
	}
	return &compiledWebhook{
		name: w.Name,
		matcher: matchconditions.NewMatcher(compiler.CompileCondition(conds, withAuthorizer, environment.StoredExpressions),
			w.FailurePolicy, "webhook", "validating", w.Name),
		each:  compiler.CompileCondition(each, withAuthorizer, environment.StoredExpressions),
		exprs: exprs,
	}
}

func (c *compiledWebhook) check(ctx context.Context, va *admission.VersionedAttributes) webhookResult {
	return webhookResult{
		Name:        c.name,
		Match:       toMatch(c.matcher.Match(ctx, va, nil, nil)),
		Expressions: evaluateEach(ctx, c.each, c.exprs, va),
	}
}

// compiledPolicy holds a ValidatingAdmissionPolicy compiled as compilePolicy
// (policy/validating/plugin.go) does, plus each expression on its own.
type compiledPolicy struct {
	compiler  *plugincel.CompositedCompiler
	matcher   matchconditions.Matcher
	validator validating.Validator
	each      plugincel.ConditionEvaluator
	exprs     []*expression
	messages  plugincel.ConditionEvaluator
	msgExprs  []*expression
	err       error
}

func compilePolicy(p *admissionregistrationv1.ValidatingAdmissionPolicy) *compiledPolicy {
	compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		return &compiledPolicy{err: err}
	}
	c := &compiledPolicy{compiler: compiler}
	vars := make([]plugincel.NamedExpressionAccessor, len(p.Spec.Variables))
	for i, v := range p.Spec.Variables {
		vars[i] = &validating.Variable{Name: v.Name, Expression: v.Expression}
	}
	compiler.CompileAndStoreVariables(vars, withAuthorizer, environment.StoredExpressions)
	conds := make([]plugincel.ExpressionAccessor, len(p.Spec.MatchConditions))
	for i, mc := range p.Spec.MatchConditions {
		conds[i] = &matchconditions.MatchCondition{Name: mc.Name, Expression: mc.Expression}
		c.exprs = append(c.exprs, &expression{"matchCondition " + mc.Name, mc.Expression, boolType})
	}
	if len(conds) > 0 {
		c.matcher = matchconditions.NewMatcher(compiler.CompileCondition(conds, withAuthorizer, environment.StoredExpressions),
			p.Spec.FailurePolicy, "policy", "validate", p.Name)
	}
	validations := make([]plugincel.ExpressionAccessor, len(p.Spec.Validations))
	messages := make([]plugincel.ExpressionAccessor, len(p.Spec.Validations))
	for i, v := range p.Spec.Validations {
		validations[i] = &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason}
		c.exprs = append(c.exprs, &expression{fmt.Sprintf("validation %d", i), v.Expression, boolType})
		if v.MessageExpression != "" {
			messages[i] = &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression}
			c.msgExprs = append(c.msgExprs, &expression{fmt.Sprintf("messageExpression %d", i), v.MessageExpression, stringType})
		}
	}
	c.validator = validating.NewValidator(
		compiler.CompileCondition(validations, withAuthorizer, environment.StoredExpressions),
		c.matcher,
		compiler.CompileCondition(nil, withAuthorizer, environment.StoredExpressions),
		compiler.CompileCondition(messages, withoutAuthorizer, environment.StoredExpressions),
		p.Spec.FailurePolicy, nil)
	for _, v := range p.Spec.Variables {
		c.exprs = append(c.exprs, &expression{"variable " + v.Name, "variables." + v.Name, anyType})
	}
	each := make([]plugincel.ExpressionAccessor, len(c.exprs))
	for i := range c.exprs {
		each[i] = c.exprs[i]
	}
	c.each = compiler.CompileCondition(each, withAuthorizer, environment.StoredExpressions)
	eachMsg := make([]plugincel.ExpressionAccessor, len(c.msgExprs))
	for i := range c.msgExprs {
		eachMsg[i] = c.msgExprs[i]
	}
	c.messages = compiler.CompileCondition(eachMsg, withoutAuthorizer, environment.StoredExpressions)
	return c
}

func (c *compiledPolicy) check(ctx context.Context, va *admission.VersionedAttributes) *policyResult {
	if c.err != nil {
		return &policyResult{Match: matchResult{Error: c.err.Error()}}
	}
	result := &policyResult{Match: matchResult{Matches: true}}
	if c.matcher != nil {
		result.Match = toMatch(c.matcher.Match(c.compiler.CreateContext(ctx), va, nil, nil))
	}
	if result.Match.Matches {
		vr := c.validator.Validate(c.compiler.CreateContext(ctx), va.GetResource(), va, nil, nil, celconfig.RuntimeCELCostBudget, nil)
		for _, d := range vr.Decisions {
			result.Decisions = append(result.Decisions, decision{string(d.Action), string(d.Evaluation), d.Message, string(d.Reason)})
		}
	}
	// Every expression on its own, whatever the match said: an error anywhere is a finding.
	result.Expressions = evaluateEach(c.compiler.CreateContext(ctx), c.each, c.exprs, va)
	if len(c.msgExprs) > 0 {
		result.Expressions = append(result.Expressions, evaluateEach(c.compiler.CreateContext(ctx), c.messages, c.msgExprs, va)...)
	}
	return result
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintf(os.Stderr, "celcheck: reading input: %v\n", err)
		os.Exit(2)
	}
	ctx := context.Background()
	webhooks := make([]*compiledWebhook, len(in.Webhooks))
	for i, w := range in.Webhooks {
		webhooks[i] = compileWebhook(w)
	}
	var pol *compiledPolicy
	if in.Policy != nil {
		pol = compilePolicy(in.Policy)
	}
	out := make([]caseResult, 0, len(in.Cases))
	for _, c := range in.Cases {
		r := caseResult{Name: c.Name}
		va, err := attributesFor(c)
		if err != nil {
			r.Error = err.Error()
			out = append(out, r)
			continue
		}
		for _, w := range webhooks {
			r.Webhooks = append(r.Webhooks, w.check(ctx, va))
		}
		if pol != nil {
			r.Policy = pol.check(ctx, va)
		}
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "celcheck: writing output: %v\n", err)
		os.Exit(1)
	}
}
