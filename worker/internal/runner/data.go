package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/herd-metal/herd/proto/workflow"
)

// DataFile is the workflow data's file name inside the directory bound at
// /workflow: actions read and write /workflow/data.
const DataFile = "data"

// Metadata says who changed the workflow data (Tinkerbell v0.6's names).
type Metadata struct {
	WorkerID  string    `json:"workerID"`
	Action    string    `json:"actionName"`
	Task      string    `json:"taskName"`
	UpdatedAt time.Time `json:"updatedAt"`
	SHA256    string    `json:"sha256"`
}

// fetchData writes the latest workflow data to the workflow's directory
// and returns it.
func (w *Worker) fetchData(ctx context.Context, wfID string) ([]byte, error) {
	var data []byte
	err := w.retry(ctx, "get the workflow data", func(ctx context.Context) error {
		var err error
		data, err = w.server.Data(ctx, wfID)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		data = []byte("{}")
	}
	dir := w.workflowDir(wfID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("workflow data directory: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, DataFile), data); err != nil {
		return nil, fmt.Errorf("workflow data: %w", err)
	}
	return data, nil
}

// sendData sends the workflow data back when the action changed it. An
// error says why the data could not be kept (too large, not JSON, refused).
func (w *Worker) sendData(ctx context.Context, log *slog.Logger, wfID string, a *workflow.WorkflowAction, before []byte) error {
	name := filepath.Join(w.workflowDir(wfID), DataFile)
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the action removed it: nothing to say
	}
	if err != nil {
		return fmt.Errorf("workflow data: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, int64(w.cfg.MaxDataBytes)+1)); err != nil {
		return fmt.Errorf("workflow data: %w", err)
	}
	after := buf.Bytes()
	if bytes.Equal(after, before) {
		return nil
	}
	if len(after) > w.cfg.MaxDataBytes {
		return fmt.Errorf("the action left more than %d bytes of workflow data in /workflow/%s: not sent", w.cfg.MaxDataBytes, DataFile)
	}
	if !json.Valid(after) {
		return fmt.Errorf("the action left workflow data in /workflow/%s that is not valid JSON: not sent", DataFile)
	}
	sum := sha256.Sum256(after)
	meta, _ := json.Marshal(Metadata{WorkerID: w.cfg.WorkerID, Action: a.GetName(), Task: a.GetTaskName(),
		UpdatedAt: w.now().UTC(), SHA256: hex.EncodeToString(sum[:])})
	rctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), w.cfg.FinalReportWithin)
		defer cancel()
	}
	err = w.retry(rctx, "send the workflow data", func(ctx context.Context) error {
		return w.server.UpdateData(ctx, wfID, meta, after)
	})
	if err != nil {
		return fmt.Errorf("sending the workflow data: %w", err)
	}
	log.InfoContext(ctx, "workflow data sent", "bytes", len(after), "sha256", hex.EncodeToString(sum[:]))
	return nil
}

func writeFileAtomic(name string, b []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
