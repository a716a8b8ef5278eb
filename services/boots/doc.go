// Package boots is herd-boots: the DHCP, TFTP and HTTP iPXE service that
// network-boots machines into the OSIE.
package boots
