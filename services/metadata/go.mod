module github.com/herd-metal/herd/services/metadata

go 1.26.0

require (
	github.com/herd-metal/herd/pkg v0.0.0
	github.com/herd-metal/herd/proto v0.0.0
)

replace (
	github.com/herd-metal/herd/pkg => ../../pkg
	github.com/herd-metal/herd/proto => ../../proto
)
