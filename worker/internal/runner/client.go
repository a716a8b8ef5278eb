package runner

import (
	"context"
	"errors"
	"io"

	"github.com/herd-metal/herd/proto/workflow"
)

// Client is the Server of a real herd-server (or any Tinkerbell v0.6
// server): the worker-facing RPCs of WorkflowService.
type Client struct {
	c workflow.WorkflowServiceClient
}

// NewClient wraps a WorkflowService client (the connection carries the
// worker credential, see pkg/connect).
func NewClient(c workflow.WorkflowServiceClient) *Client { return &Client{c: c} }

// Contexts implements Server.
func (c *Client) Contexts(ctx context.Context, workerID string) ([]*workflow.WorkflowContext, error) {
	stream, err := c.c.GetWorkflowContexts(ctx, &workflow.WorkflowContextRequest{WorkerId: workerID})
	if err != nil {
		return nil, err
	}
	var list []*workflow.WorkflowContext
	for {
		wc, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return list, nil
		}
		if err != nil {
			return nil, err
		}
		list = append(list, wc)
	}
}

// Actions implements Server.
func (c *Client) Actions(ctx context.Context, workflowID string) ([]*workflow.WorkflowAction, error) {
	l, err := c.c.GetWorkflowActions(ctx, &workflow.WorkflowActionsRequest{WorkflowId: workflowID})
	if err != nil {
		return nil, err
	}
	return l.GetActionList(), nil
}

// Report implements Server.
func (c *Client) Report(ctx context.Context, r *workflow.WorkflowActionStatus) error {
	_, err := c.c.ReportActionStatus(ctx, r)
	return err
}

// Data implements Server.
func (c *Client) Data(ctx context.Context, workflowID string) ([]byte, error) {
	d, err := c.c.GetWorkflowData(ctx, &workflow.GetWorkflowDataRequest{WorkflowId: workflowID})
	if err != nil {
		return nil, err
	}
	return d.GetData(), nil
}

// UpdateData implements Server.
func (c *Client) UpdateData(ctx context.Context, workflowID string, metadata, data []byte) error {
	_, err := c.c.UpdateWorkflowData(ctx, &workflow.UpdateWorkflowDataRequest{WorkflowId: workflowID, Metadata: metadata, Data: data})
	return err
}

// ReportLogs implements Server.
func (c *Client) ReportLogs(ctx context.Context, l *workflow.ActionLogs) error {
	_, err := c.c.ReportActionLogs(ctx, l)
	return err
}

// ContextList implements Server.
func (c *Client) ContextList(ctx context.Context, workerID string) ([]*workflow.WorkflowContext, error) {
	l, err := c.c.GetWorkflowContextList(ctx, &workflow.WorkflowContextRequest{WorkerId: workerID})
	if err != nil {
		return nil, err
	}
	return l.GetWorkflowContexts(), nil
}
