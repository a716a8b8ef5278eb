package ui

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/google/uuid"
	"google.golang.org/grpc/status"

	machinev1 "github.com/herd-metal/herd/proto/machine"
)

// noBMC is the power state of a machine without a BMC.
const noBMC = "-"

// powerState is what the pages show of a machine's power: the state
// herd-server last saw ("on", "off", "" not known yet), or noBMC when
// ListPower does not list it (no BMC in its record).
func powerState(states map[string]string, hwID string) string {
	s, ok := states[hwID]
	if !ok {
		return noBMC
	}
	return s
}

// powerStates are the last seen power states by hardware id (ListPower).
func (h *Handler) powerStates(r *http.Request, s session) (map[string]string, error) {
	list, err := h.api.bmc.ListPower(h.asOperator(r.Context(), s.token), &machinev1.ListPowerRequest{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list.GetMachines()))
	for _, m := range list.GetMachines() {
		out[m.GetHardwareId()] = m.GetState()
	}
	return out, nil
}

// power answers the fleet page's script: {hardware id: state} of the
// machines with a BMC.
func (h *Handler) power(w http.ResponseWriter, r *http.Request, s session) {
	states, err := h.powerStates(r, s)
	if err != nil {
		http.Error(w, "power states: "+status.Convert(err).Message(), httpStatus(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(states)
}

// bmcRequest is what a power button asks: netboot, or a power action.
// It refuses any other, before the API is called.
func bmcRequest(action string) (netboot bool, err error) {
	switch action {
	case "netboot":
		return true, nil
	case "on", "off", "cycle":
		return false, nil
	}
	return false, fmt.Errorf("%q is not on, off, cycle or netboot", action)
}

// jobView is a BMC job as the machine page shows it.
type jobView struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Action  string `json:"action,omitempty"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	Answer  string `json:"answer,omitempty"`
}

func viewJob(j *machinev1.Job) jobView {
	return jobView{ID: j.GetId(), Kind: trimEnum(j.GetKind().String(), "JOB_KIND_"), Action: j.GetAction(),
		State: trimEnum(j.GetState().String(), "JOB_STATE_"), Message: j.GetMessage(), Answer: j.GetAnswer()}
}

func trimEnum(s, prefix string) string {
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}

// bmcAction queues a power or netboot job for the machine (Power /
// Netboot with the session's token) and answers the job as JSON, or the
// API's refusal as text with its status.
func (h *Handler) bmcAction(w http.ResponseWriter, r *http.Request, _ string, s session) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		http.Error(w, "no such machine: the id is not a UUID", http.StatusBadRequest)
		return
	}
	action := r.PostFormValue("action")
	netboot, err := bmcRequest(action)
	if err != nil {
		http.Error(w, "refused: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx := h.asOperator(r.Context(), s.token)
	var job *machinev1.Job
	if netboot {
		job, err = h.api.bmc.Netboot(ctx, &machinev1.NetbootRequest{HardwareId: id})
	} else {
		job, err = h.api.bmc.Power(ctx, &machinev1.PowerRequest{HardwareId: id, Action: action})
	}
	if err != nil {
		http.Error(w, action+": "+status.Convert(err).Message(), httpStatus(err))
		return
	}
	h.log.Info("ui: bmc job queued", "hardware_id", id, "action", action, "job", job.GetId(), "peer", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(viewJob(job))
}

// jobEvents streams a BMC job (server-sent events "job"), now and after
// each change, until its final state: WatchJob with the session's token.
func (h *Handler) jobEvents(w http.ResponseWriter, r *http.Request) {
	id, s, ok := h.streamOf(w, r, "job")
	if !ok {
		return
	}
	ctx, cancel := h.streamContext(r, s)
	defer cancel()
	stream, err := h.api.bmc.WatchJob(ctx, &machinev1.GetJobRequest{Id: id})
	if err != nil {
		http.Error(w, status.Convert(err).Message(), httpStatus(err))
		return
	}
	out := startSSE(w)
	for {
		j, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			_ = out.event("end", map[string]string{})
			_ = out.flush()
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				_ = out.event("fail", map[string]string{"message": status.Convert(err).Message()})
				_ = out.flush()
			}
			return
		}
		if out.event("job", viewJob(j)) != nil || out.flush() != nil {
			return
		}
	}
}
