package e2e

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/workflow"
)

// victim is a machine of the provisioning network. Hardware records take
// no loopback address, so the test calls from loopback addresses no
// hardware owns (the attacker) and from a trusted one standing for the
// machine's NAT gateway; the machine calling from its own address is the
// sandbox's run (a QEMU VM from its reserved address) and auth's tests.
const (
	hwVictim  = "7a1d3c55-0f0f-4e4e-8d8d-000000000f01"
	macVictim = "08:00:27:00:0f:01"
	ipVictim  = "10.99.0.21"
)

const victimJSON = `{"id":"` + hwVictim + `","network":{"interfaces":[{"dhcp":{"mac":"` + macVictim + `","arch":"x86_64",
"ip":{"address":"` + ipVictim + `","netmask":"255.255.255.0"}},"netboot":{"allow_pxe":true,"allow_workflow":true}}]}}`

// TestStolenWorkerCredential (issue 14, finding 1, server side): a valid
// worker credential, as read off the machine's script, used from an
// address no hardware owns, opens none of the worker RPCs: reading the
// actions (their environment holds secrets), overwriting the workflow
// data and reporting actions SUCCESS are refused (PermissionDenied, one
// message) and logged at WARN with the peer and the identity claimed.
// From a trusted source (--worker-trusted-sources, a NAT gateway) the same
// credential works.
func TestStolenWorkerCredential(t *testing.T) {
	s := servertest.Start(t, "--worker-trusted-sources", "127.0.0.77")
	ca := caPool(t, s, "127.0.0.1")
	s.MustHerd(victimJSON, "hardware", "push")
	s.MustHerd(slowTemplate, "template", "create")
	id := s.CreateWorkflow("patient", `{"device_1":"`+macVictim+`"}`)
	token := s.WorkerToken(hwVictim)

	for _, attacker := range []string{"127.0.0.66", "127.0.0.1"} {
		w := workflow.NewWorkflowServiceClient(dialFrom(t, s, ca, attacker, token))
		_, err := w.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
		wantCode(t, err, codes.PermissionDenied, "not taken from this address")
		_, err = w.UpdateWorkflowData(ctx(t), &workflow.UpdateWorkflowDataRequest{WorkflowId: id, Data: []byte(`{"owned":true}`)})
		wantCode(t, err, codes.PermissionDenied, "not taken from this address")
		for _, action := range []string{"first", "second"} {
			_, err = w.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "only", ActionName: action,
				ActionStatus: workflow.State_STATE_SUCCESS})
			wantCode(t, err, codes.PermissionDenied, "not taken from this address")
		}
		_, err = w.GetWorkflowContextList(ctx(t), &workflow.WorkflowContextRequest{WorkerId: hwVictim})
		wantCode(t, err, codes.PermissionDenied, "not taken from this address")
	}
	findLine(t, s, "call refused: authentication failed", map[string]string{
		"peer": `^127\.0\.0\.66:\d+$`, "identity": `^unauthenticated \(claims worker:` + hwVictim + `\)$`, "level": "^WARN$",
		"reason": "^worker credential from another address$", "method": "ReportActionStatus$"})

	// Nothing the attacker sent took: the workflow is pending, its data
	// untouched.
	if out := s.MustHerd("", "workflow", "state", id); strings.Contains(out, "SUCCESS") {
		t.Errorf("the stolen credential's reports took:\n%s", out)
	}
	if out, _, _ := s.Herd("", "workflow", "data", id); strings.Contains(out, "owned") {
		t.Errorf("the stolen credential's data took:\n%s", out)
	}

	// Through the trusted NAT gateway, as the machine behind it.
	own := workflow.NewWorkflowServiceClient(dialFrom(t, s, ca, "127.0.0.77", token))
	acts, err := own.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
	if err != nil || len(acts.GetActionList()) != 2 {
		t.Fatalf("the machine's own actions: %v %v", acts, err)
	}
	if _, err := own.UpdateWorkflowData(ctx(t), &workflow.UpdateWorkflowDataRequest{WorkflowId: id, Data: []byte(`{"mine":true}`)}); err != nil {
		t.Fatalf("the machine's own data update: %v", err)
	}
	report(t, own, id, "only", "first", workflow.State_STATE_RUNNING)
	findLine(t, s, "action reported", map[string]string{"peer": `^127\.0\.0\.77:\d+$`, "identity": "^worker:" + hwVictim + "$"})
}

// TestWorkerSourceCheckOff: --worker-source-check=off (HERD_* as well)
// takes a worker credential from any address, for NAT setups that cannot
// name their gateways (and re-opens the theft, docs/security.md).
func TestWorkerSourceCheckOff(t *testing.T) {
	s := servertest.Start(t, "--worker-source-check=off")
	ca := caPool(t, s, "127.0.0.1")
	s.MustHerd(victimJSON, "hardware", "push")
	s.MustHerd(slowTemplate, "template", "create")
	id := s.CreateWorkflow("patient", `{"device_1":"`+macVictim+`"}`)
	w := workflow.NewWorkflowServiceClient(dialFrom(t, s, ca, "127.0.0.66", s.WorkerToken(hwVictim)))
	if _, err := w.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id}); err != nil {
		t.Errorf("with the check off: %v", err)
	}
}
