package api

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

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
	// The Watch reads the records with their credential generation, which
	// the worker credentials it hands out are bound to.
	AllHardwareWithGeneration(ctx context.Context, fn func(hw *hardware.Hardware, generation int64) error) error
	HardwareWithGeneration(ctx context.Context, id string) (*hardware.Hardware, int64, error)
}

// Notifier delivers the ids of changed records on a channel; "" means
// changes may have been missed and the subscriber should resync.
type Notifier interface {
	Subscribe(channel string) (<-chan string, func())
}

// Signer issues worker credentials: the one of a record's generation, and
// when a fresher one will be issued.
type Signer interface {
	WorkerToken(hwID string, generation int64) (token string, renew time.Time)
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
// version (and credential generation) it sent of each record, so a resync
// after missed notifications sends only real differences, and a record
// deleted and pushed again meanwhile comes with its new credential. Callers that get worker credentials (admin,
// service) get each machine's with its ADDED and UPDATED events, and every
// record again as UPDATED when fresher credentials are issued (every
// quarter of their lifetime), so the ones they hold never run short.
func (h *Hardware) Watch(_ *hardware.WatchRequest, stream hardware.HardwareService_WatchServer) error {
	ctx := stream.Context()
	changes, cancel := h.notify.Subscribe(store.ChannelHardware)
	defer cancel()

	tokens := auth.FromContext(ctx).GetsWorkerTokens()
	type seen struct{ version, gen int64 }
	sent := map[string]seen{}
	var renew time.Time // when the credentials sent are superseded
	send := func(t hardware.WatchEvent_Type, hw *hardware.Hardware, gen int64) error {
		ev := &hardware.WatchEvent{Type: t, Hardware: hw}
		if t == hardware.WatchEvent_TYPE_DELETED {
			delete(sent, hw.GetId())
		} else {
			sent[hw.GetId()] = seen{hw.GetVersion(), gen}
			if tokens {
				ev.WorkerToken, renew = h.signer.WorkerToken(hw.GetId(), gen)
			}
		}
		return stream.Send(ev)
	}
	// resync compares the whole store with what was sent; all sends every
	// record known again (fresh credentials).
	resync := func(initial, all bool) error {
		present := map[string]bool{}
		err := h.store.AllHardwareWithGeneration(ctx, func(hw *hardware.Hardware, gen int64) error {
			present[hw.GetId()] = true
			was, known := sent[hw.GetId()]
			switch {
			case !known:
				return send(hardware.WatchEvent_TYPE_ADDED, hw, gen)
			case all || was != (seen{hw.GetVersion(), gen}):
				return send(hardware.WatchEvent_TYPE_UPDATED, hw, gen)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for id := range sent {
			if !present[id] {
				if err := send(hardware.WatchEvent_TYPE_DELETED, &hardware.Hardware{Id: id}, 0); err != nil {
					return err
				}
			}
		}
		if initial {
			return stream.Send(&hardware.WatchEvent{Type: hardware.WatchEvent_TYPE_SYNCED})
		}
		return nil
	}
	if err := resync(true, false); err != nil {
		return err
	}
	refresh := time.NewTimer(time.Hour)
	defer refresh.Stop()
	for {
		refresh.Stop()
		var due <-chan time.Time
		if tokens && !renew.IsZero() {
			refresh.Reset(time.Until(renew))
			due = refresh.C
		}
		var id string
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-due:
			renew = time.Time{}
			if err := resync(false, true); err != nil {
				return err
			}
			continue
		case got, ok := <-changes:
			if !ok {
				return errors.New("change feed closed")
			}
			id = got
		}
		if id == "" {
			if err := resync(false, false); err != nil {
				return err
			}
			continue
		}
		hw, gen, err := h.store.HardwareWithGeneration(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if _, known := sent[id]; known {
				err = send(hardware.WatchEvent_TYPE_DELETED, &hardware.Hardware{Id: id}, 0)
			} else {
				err = nil
			}
		case err != nil:
		default:
			if was, known := sent[id]; !known {
				err = send(hardware.WatchEvent_TYPE_ADDED, hw, gen)
			} else if was != (seen{hw.GetVersion(), gen}) {
				err = send(hardware.WatchEvent_TYPE_UPDATED, hw, gen)
			}
		}
		if err != nil {
			return err
		}
	}
}
