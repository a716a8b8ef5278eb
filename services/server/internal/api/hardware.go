package api

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/server/internal/auth"
	"github.com/herd-metal/herd/services/server/internal/store"
)

// HardwareStore is what the hardware service needs from the store.
type HardwareStore interface {
	PushHardware(ctx context.Context, hw *hardware.Hardware) (*hardware.Hardware, error)
	HardwareByID(ctx context.Context, id string) (*hardware.Hardware, error)
	HardwareByMAC(ctx context.Context, mac string) (*hardware.Hardware, error)
	HardwareByIP(ctx context.Context, ip string) (*hardware.Hardware, error)
	AllHardware(ctx context.Context, fn func(*hardware.Hardware) error) error
	DeleteHardware(ctx context.Context, id string) error
}

// Notifier delivers the ids of changed records on a channel; "" means
// changes may have been missed and the subscriber should resync.
type Notifier interface {
	Subscribe(channel string) (<-chan string, func())
}

// Signer issues worker credentials.
type Signer interface {
	WorkerToken(hwID string) string
}

// Hardware implements HardwareService.
type Hardware struct {
	hardware.UnimplementedHardwareServiceServer
	store  HardwareStore
	notify Notifier
	signer Signer
	log    *slog.Logger
}

// NewHardware returns the hardware service.
func NewHardware(s HardwareStore, n Notifier, signer Signer, log *slog.Logger) *Hardware {
	return &Hardware{store: s, notify: n, signer: signer, log: log}
}

// Push validates and stores a record.
func (h *Hardware) Push(ctx context.Context, req *hardware.PushRequest) (*hardware.Empty, error) {
	hw := req.GetData()
	if hw == nil {
		return nil, invalid("data", "missing: send the hardware record")
	}
	if proto.Size(hw) > spec.MaxHardwareBytes {
		return nil, invalid("data", "hardware record larger than the 1 MiB limit")
	}
	spec.NormalizeHardware(hw)
	if err := spec.ValidateHardware(hw); err != nil {
		return nil, err
	}
	saved, err := h.store.PushHardware(ctx, hw)
	if err != nil {
		return nil, err
	}
	macs, _ := spec.HardwareAddresses(saved)
	h.log.InfoContext(ctx, "hardware pushed", "hardware_id", saved.GetId(), "macs", macs, "version", saved.GetVersion())
	return &hardware.Empty{}, nil
}

// ByMAC looks a record up by one of its interface MACs.
func (h *Hardware) ByMAC(ctx context.Context, req *hardware.GetRequest) (*hardware.Hardware, error) {
	mac, err := spec.NormalizeMAC(req.GetMac())
	if err != nil {
		return nil, invalid("mac", err.Error())
	}
	return h.store.HardwareByMAC(ctx, mac)
}

// ByIP looks a record up by one of its interface IPs.
func (h *Hardware) ByIP(ctx context.Context, req *hardware.GetRequest) (*hardware.Hardware, error) {
	ip := net.ParseIP(req.GetIp())
	if ip == nil {
		return nil, invalid("ip", "\""+clip(req.GetIp())+"\" is not an IP address")
	}
	return h.store.HardwareByIP(ctx, ip.String())
}

// ByID looks a record up by its id.
func (h *Hardware) ByID(ctx context.Context, req *hardware.GetRequest) (*hardware.Hardware, error) {
	if err := requireID("id", req.GetId()); err != nil {
		return nil, err
	}
	return h.store.HardwareByID(ctx, req.GetId())
}

// All streams every record.
func (h *Hardware) All(_ *hardware.Empty, stream hardware.HardwareService_AllServer) error {
	return h.store.AllHardware(stream.Context(), stream.Send)
}

// Delete removes a record.
func (h *Hardware) Delete(ctx context.Context, req *hardware.DeleteRequest) (*hardware.Empty, error) {
	if err := requireID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := h.store.DeleteHardware(ctx, req.GetId()); err != nil {
		return nil, err
	}
	h.log.InfoContext(ctx, "hardware deleted", "hardware_id", req.GetId())
	return &hardware.Empty{}, nil
}

// DeprecatedWatch sends the named record each time it changes after the
// call, as Tinkerbell v0.6 did: nothing on subscribe, the record after each
// push (or netboot switch), and the end of the stream with NotFound when it
// is deleted. Unlike v0.6, an id that names no record is NotFound at once
// (v0.6 waited for a first push), and two watchers of one id both get the
// changes (v0.6 ended the older stream with "evicted").
func (h *Hardware) DeprecatedWatch(req *hardware.GetRequest, stream hardware.HardwareService_DeprecatedWatchServer) error {
	if err := requireID("id", req.GetId()); err != nil {
		return err
	}
	changes, cancel := h.notify.Subscribe(store.ChannelHardware)
	defer cancel()
	ctx := stream.Context()
	// Subscribed before this read, so no change after it is missed.
	last, err := h.store.HardwareByID(ctx, req.GetId())
	if err != nil {
		return err
	}
	for {
		if err := waitFor(ctx, changes, req.GetId()); err != nil {
			return err
		}
		hw, err := h.store.HardwareByID(ctx, req.GetId())
		if err != nil {
			return err
		}
		// A resync ("" on the feed), or the notice of a change already
		// read, finds the record as last sent: nothing to say.
		if proto.Equal(hw, last) {
			continue
		}
		if err := stream.Send(hw); err != nil {
			return err
		}
		last = hw
	}
}

// waitFor returns when id (or a resync) comes on changes.
func waitFor(ctx context.Context, changes <-chan string, id string) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case got, ok := <-changes:
			if !ok {
				return errors.New("change feed closed")
			}
			if got == id || got == "" {
				return nil
			}
		}
	}
}

// Watch streams the whole inventory, then its changes. It tracks the
// version it sent of each record, so a resync after missed notifications
// sends only real differences.
func (h *Hardware) Watch(_ *hardware.WatchRequest, stream hardware.HardwareService_WatchServer) error {
	ctx := stream.Context()
	changes, cancel := h.notify.Subscribe(store.ChannelHardware)
	defer cancel()

	admin := auth.FromContext(ctx).Admin
	sent := map[string]int64{}
	send := func(t hardware.WatchEvent_Type, hw *hardware.Hardware) error {
		ev := &hardware.WatchEvent{Type: t, Hardware: hw}
		if t == hardware.WatchEvent_TYPE_DELETED {
			delete(sent, hw.GetId())
		} else {
			sent[hw.GetId()] = hw.GetVersion()
			if admin {
				ev.WorkerToken = h.signer.WorkerToken(hw.GetId())
			}
		}
		return stream.Send(ev)
	}
	// resync compares the whole store with what was sent.
	resync := func(initial bool) error {
		seen := map[string]bool{}
		err := h.store.AllHardware(ctx, func(hw *hardware.Hardware) error {
			seen[hw.GetId()] = true
			v, known := sent[hw.GetId()]
			switch {
			case !known:
				return send(hardware.WatchEvent_TYPE_ADDED, hw)
			case v != hw.GetVersion():
				return send(hardware.WatchEvent_TYPE_UPDATED, hw)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for id := range sent {
			if !seen[id] {
				if err := send(hardware.WatchEvent_TYPE_DELETED, &hardware.Hardware{Id: id}); err != nil {
					return err
				}
			}
		}
		if initial {
			return stream.Send(&hardware.WatchEvent{Type: hardware.WatchEvent_TYPE_SYNCED})
		}
		return nil
	}
	if err := resync(true); err != nil {
		return err
	}
	for {
		var id string
		select {
		case <-ctx.Done():
			return ctx.Err()
		case got, ok := <-changes:
			if !ok {
				return errors.New("change feed closed")
			}
			id = got
		}
		if id == "" {
			if err := resync(false); err != nil {
				return err
			}
			continue
		}
		hw, err := h.store.HardwareByID(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if _, known := sent[id]; known {
				err = send(hardware.WatchEvent_TYPE_DELETED, &hardware.Hardware{Id: id})
			} else {
				err = nil
			}
		case err != nil:
		case sent[id] == 0:
			err = send(hardware.WatchEvent_TYPE_ADDED, hw)
		case sent[id] != hw.GetVersion():
			err = send(hardware.WatchEvent_TYPE_UPDATED, hw)
		}
		if err != nil {
			return err
		}
	}
}
