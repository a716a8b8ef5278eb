package ui

// The changes an operator makes from the pages: netboot on/off, delete a
// workflow, create one from a template. Each is a form post carrying the
// session's CSRF token; the API decides, and its refusal is shown.

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

// withAllowPXE is a copy of hw with netboot.allow_pxe set to allow on
// every interface, the record otherwise as it was.
func withAllowPXE(hw *hardware.Hardware, allow bool) *hardware.Hardware {
	out := proto.Clone(hw).(*hardware.Hardware)
	for _, i := range out.GetNetwork().GetInterfaces() {
		if i.Netboot == nil {
			i.Netboot = &hardware.Hardware_Netboot{}
		}
		i.Netboot.AllowPxe = allow
	}
	return out
}

// onOff reads a form's on/off switch.
func onOff(v string) (bool, error) {
	switch v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, errors.New("netboot must be on or off")
}

// badRequest shows what is wrong with a form the page did not make.
func (h *Handler) badRequest(w http.ResponseWriter, msg string) {
	h.render(w, http.StatusBadRequest, "error.html", errorView{Message: "refused: " + msg})
}

// setNetboot switches the machine's allow_pxe (ByID, then Push of the
// record with only that changed).
func (h *Handler) setNetboot(w http.ResponseWriter, r *http.Request, _ string, s session) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		h.badRequest(w, "the machine id is not a UUID")
		return
	}
	allow, err := onOff(r.PostFormValue("netboot"))
	if err != nil {
		h.badRequest(w, err.Error())
		return
	}
	ctx := h.asOperator(r.Context(), s.token)
	hw, err := h.api.hw.ByID(ctx, &hardware.GetRequest{Id: id})
	if err != nil {
		h.apiError(w, r, "machine "+id, err)
		return
	}
	if _, err := h.api.hw.Push(ctx, &hardware.PushRequest{Data: withAllowPXE(hw, allow)}); err != nil {
		h.apiError(w, r, "netboot of machine "+id, err)
		return
	}
	h.log.Info("ui: netboot switched", "hardware_id", id, "allow_pxe", allow, "peer", r.RemoteAddr)
	http.Redirect(w, r, Prefix+"machine/"+id, http.StatusSeeOther)
}

// deleteWorkflow deletes a workflow (DeleteWorkflow) and goes back to
// the machine page it was shown on.
func (h *Handler) deleteWorkflow(w http.ResponseWriter, r *http.Request, _ string, s session) {
	id, back := r.PathValue("id"), r.PostFormValue("machine")
	if _, err := uuid.Parse(id); err != nil {
		h.badRequest(w, "the workflow id is not a UUID")
		return
	}
	if _, err := uuid.Parse(back); err != nil {
		h.badRequest(w, "the machine id is not a UUID")
		return
	}
	if _, err := h.api.wf.DeleteWorkflow(h.asOperator(r.Context(), s.token), &workflow.GetRequest{Id: id}); err != nil {
		h.apiError(w, r, "delete workflow "+id, err)
		return
	}
	h.log.Info("ui: workflow deleted", "workflow_id", id, "hardware_id", back, "peer", r.RemoteAddr)
	http.Redirect(w, r, Prefix+"machine/"+back, http.StatusSeeOther)
}

type templateRow struct{ ID, Name, Updated string }

type templatesView struct {
	CSRF      string
	Templates []templateRow
}

func (h *Handler) templatesPage(w http.ResponseWriter, r *http.Request, s session) {
	stream, err := h.api.tpl.ListTemplates(h.asOperator(r.Context(), s.token), &template.ListRequest{})
	if err != nil {
		h.apiError(w, r, "templates", err)
		return
	}
	v := templatesView{CSRF: s.csrf}
	for {
		t, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			h.apiError(w, r, "templates", err)
			return
		}
		v.Templates = append(v.Templates, templateRow{ID: t.GetId(), Name: t.GetName(), Updated: stamp(t.GetUpdatedAt())})
	}
	h.render(w, http.StatusOK, "templates.html", v)
}

type machineChoice struct{ MAC, Label string }

type templateView struct {
	CSRF, ID, Name, Data string
	Machines             []machineChoice
	// Created is the workflow just created from it, if any.
	Created string
}

func (h *Handler) templatePage(w http.ResponseWriter, r *http.Request, s session) {
	h.showTemplate(w, r, s, http.StatusOK, "")
}

// showTemplate renders a template (GetTemplate) with the machines a
// workflow can be created for (their first MAC).
func (h *Handler) showTemplate(w http.ResponseWriter, r *http.Request, s session, code int, created string) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		h.render(w, http.StatusBadRequest, "error.html", errorView{Message: "no such template: the id is not a UUID"})
		return
	}
	ctx := h.asOperator(r.Context(), s.token)
	t, err := h.api.tpl.GetTemplate(ctx, &template.GetRequest{GetBy: &template.GetRequest_Id{Id: id}})
	if err != nil {
		h.apiError(w, r, "template "+id, err)
		return
	}
	stream, err := h.api.hw.All(ctx, &hardware.Empty{})
	if err != nil {
		h.apiError(w, r, "machines", err)
		return
	}
	v := templateView{CSRF: s.csrf, ID: id, Name: t.GetName(), Data: t.GetData(), Created: created}
	for {
		hw, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			h.apiError(w, r, "machines", err)
			return
		}
		for _, i := range hw.GetNetwork().GetInterfaces() {
			if mac := i.GetDhcp().GetMac(); mac != "" {
				v.Machines = append(v.Machines, machineChoice{MAC: mac, Label: i.GetDhcp().GetHostname() + " " + mac})
				break
			}
		}
	}
	h.render(w, code, "template.html", v)
}

// createWorkflow creates a workflow of the template for one machine
// (CreateWorkflow with the hardware map {"device_1": MAC}).
func (h *Handler) createWorkflow(w http.ResponseWriter, r *http.Request, _ string, s session) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		h.badRequest(w, "the template id is not a UUID")
		return
	}
	mac, err := net.ParseMAC(r.PostFormValue("mac"))
	if err != nil || len(mac) != 6 {
		h.badRequest(w, "choose a machine: the MAC is not one")
		return
	}
	devices, _ := json.Marshal(map[string]string{"device_1": mac.String()})
	res, err := h.api.wf.CreateWorkflow(h.asOperator(r.Context(), s.token), &workflow.CreateRequest{Template: id, Hardware: string(devices)})
	if err != nil {
		h.apiError(w, r, "create a workflow", err)
		return
	}
	h.log.Info("ui: workflow created", "workflow_id", res.GetId(), "template", id, "mac", mac.String(), "peer", r.RemoteAddr)
	h.showTemplate(w, r, s, http.StatusOK, res.GetId())
}
