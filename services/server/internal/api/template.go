package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/template"
)

// TemplateStore is what the template service needs from the store.
type TemplateStore interface {
	CreateTemplate(ctx context.Context, name, data string) (string, error)
	GetTemplate(ctx context.Context, id, name string) (*template.WorkflowTemplate, error)
	ListTemplates(ctx context.Context, pattern string, fn func(*template.WorkflowTemplate) error) error
	UpdateTemplate(ctx context.Context, id, name, data string, unchangedSince *time.Time) error
	DeleteTemplate(ctx context.Context, id string) error
}

// Template implements TemplateService.
type Template struct {
	template.UnimplementedTemplateServiceServer
	store TemplateStore
	log   *slog.Logger
}

// NewTemplate returns the template service.
func NewTemplate(s TemplateStore, log *slog.Logger) *Template {
	return &Template{store: s, log: log}
}

// checkTemplate validates the YAML and settles the name: the request's, or
// the one in the YAML when the request has none (herd's CLI and v0.6's both
// send it, REST callers may not).
func checkTemplate(name, data string) (string, error) {
	if len(data) > spec.MaxTemplateBytes {
		return "", invalid("data", "template larger than the 1 MiB limit")
	}
	if err := spec.ValidateTemplate(data); err != nil {
		return "", err
	}
	if name == "" {
		n, err := spec.TemplateName(data)
		if err != nil {
			return "", err
		}
		name = n
	}
	if err := spec.ValidateName(name); err != nil {
		return "", invalid("name", err.Error())
	}
	return name, nil
}

// CreateTemplate stores a new template.
func (t *Template) CreateTemplate(ctx context.Context, req *template.WorkflowTemplate) (*template.CreateResponse, error) {
	if req.GetId() != "" {
		return nil, invalid("id", "set by the server; leave it empty")
	}
	name, err := checkTemplate(req.GetName(), req.GetData())
	if err != nil {
		return nil, err
	}
	id, err := t.store.CreateTemplate(ctx, name, req.GetData())
	if err != nil {
		return nil, err
	}
	t.log.InfoContext(ctx, "template created", "template_id", id, "name", name)
	return &template.CreateResponse{Id: id}, nil
}

// GetTemplate returns a live template by id or name.
func (t *Template) GetTemplate(ctx context.Context, req *template.GetRequest) (*template.WorkflowTemplate, error) {
	switch by := req.GetGetBy().(type) {
	case *template.GetRequest_Id:
		if err := requireID("id", by.Id); err != nil {
			return nil, err
		}
		return t.store.GetTemplate(ctx, by.Id, "")
	case *template.GetRequest_Name:
		if by.Name == "" {
			return nil, invalid("name", "missing")
		}
		return t.store.GetTemplate(ctx, "", by.Name)
	}
	return nil, invalid("get_by", "missing: set id or name")
}

// DeleteTemplate marks a template deleted; its workflows keep their copy.
func (t *Template) DeleteTemplate(ctx context.Context, req *template.GetRequest) (*template.Empty, error) {
	id := req.GetId()
	if id == "" && req.GetName() != "" {
		tpl, err := t.store.GetTemplate(ctx, "", req.GetName())
		if err != nil {
			return nil, err
		}
		id = tpl.GetId()
	}
	if err := requireID("id", id); err != nil {
		return nil, err
	}
	if err := t.store.DeleteTemplate(ctx, id); err != nil {
		return nil, err
	}
	t.log.InfoContext(ctx, "template deleted", "template_id", id)
	return &template.Empty{}, nil
}

// ListTemplates streams live templates, optionally filtered by a name
// pattern.
func (t *Template) ListTemplates(req *template.ListRequest, stream template.TemplateService_ListTemplatesServer) error {
	if len(req.GetName()) > spec.MaxNameLength {
		return invalid("name", "pattern longer than 200 characters")
	}
	return t.store.ListTemplates(stream.Context(), req.GetName(), stream.Send)
}

// UpdateTemplate replaces a template's YAML and name. herd addition: a
// request that carries updated_at (the copy it was edited from, as
// GetTemplate answered it) is refused with FailedPrecondition when the
// template has changed since; without it, the update is Tinkerbell v0.6's
// last-writer-wins.
func (t *Template) UpdateTemplate(ctx context.Context, req *template.WorkflowTemplate) (*template.Empty, error) {
	if err := requireID("id", req.GetId()); err != nil {
		return nil, err
	}
	name, err := checkTemplate(req.GetName(), req.GetData())
	if err != nil {
		return nil, err
	}
	var since *time.Time
	if at := req.GetUpdatedAt(); at != nil {
		if err := at.CheckValid(); err != nil {
			return nil, invalid("updated_at", err.Error())
		}
		v := at.AsTime()
		since = &v
	}
	if err := t.store.UpdateTemplate(ctx, req.GetId(), name, req.GetData(), since); err != nil {
		return nil, err
	}
	t.log.InfoContext(ctx, "template updated", "template_id", req.GetId(), "name", name)
	return &template.Empty{}, nil
}
