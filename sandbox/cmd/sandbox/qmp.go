package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// qmpExecute runs one command on the QEMU Machine Protocol socket at path
// (the VM's -qmp unix:...): it reads QEMU's greeting, leaves capabilities
// negotiation (qmp_capabilities) and sends command, skipping the
// asynchronous events QEMU sends meanwhile. An error names the command
// and QEMU's answer.
func qmpExecute(ctx context.Context, path, command string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("QMP %s: %w", path, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	dec := json.NewDecoder(conn)
	var greeting map[string]json.RawMessage
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("QMP %s: reading the greeting: %w", path, err)
	}
	if _, ok := greeting["QMP"]; !ok {
		return fmt.Errorf("QMP %s: the greeting is not QMP's: %v", path, keys(greeting))
	}
	for _, c := range []string{"qmp_capabilities", command} {
		if err := json.NewEncoder(conn).Encode(map[string]string{"execute": c}); err != nil {
			return fmt.Errorf("QMP %s: sending %s: %w", path, c, err)
		}
		if err := qmpAnswer(dec); err != nil {
			return fmt.Errorf("QMP %s: %s: %w", path, c, err)
		}
	}
	return nil
}

// qmpAnswer reads up to the answer of the command just sent: nil for a
// "return", the error QEMU gave, events skipped.
func qmpAnswer(dec *json.Decoder) error {
	for {
		var msg struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := dec.Decode(&msg); err != nil {
			return err
		}
		switch {
		case msg.Error != nil:
			return fmt.Errorf("%s: %s", msg.Error.Class, msg.Error.Desc)
		case msg.Return != nil:
			return nil
		case msg.Event != "":
			continue
		default:
			return errors.New("an answer with neither return nor error")
		}
	}
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
