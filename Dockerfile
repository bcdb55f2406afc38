# flowdog container image: Debian 12 (bookworm), the system DPDK 22.11, linked dynamically.
#
# This file cannot be built on the development machine (it has no Docker engine), so it is kept
# minimal and unverified by CI; the same steps (Debian 12 packages, Rust 1.95, cargo build
# --release --locked) are what the development machine does natively.
#
# Build (needs network for apt, rustup and crates.io):
#   docker build -t flowdog .
#
# Run: DPDK needs hugepages, the NIC's VFIO device, locked memory and the host's network.
#   # on the host, once: sudo hugepages/reserve.sh --2m 4096   (and bind the NIC to vfio-pci)
#   docker run --rm -it --privileged --network host \
#       -v /dev/hugepages:/dev/hugepages \
#       --device /dev/vfio \
#       -v /etc/flowdog:/etc/flowdog:ro \
#       flowdog
#   Instead of --privileged, the narrower set:
#       --cap-add IPC_LOCK --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add NET_RAW \
#       --ulimit memlock=-1
#   (IPC_LOCK + memlock: pinned DMA memory; SYS_ADMIN: hugetlbfs and physical addresses;
#   NET_ADMIN/NET_RAW: the af_packet and tap virtual devices.)
#   Mount the hugetlbfs directory the EAL is given with --huge-dir: /dev/hugepages above, or
#   -v /dev/hugepages-flowdog:/dev/hugepages-flowdog when hugepages/reserve.sh made it.
#   DPDK's --file-prefix files live in that mount (see hugepages/README.md).

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm AS builder

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential pkg-config libclang-dev dpdk-dev libdpdk-dev curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --no-modify-path --profile minimal --default-toolchain 1.95.0 \
 && rustc --version && cargo --version

WORKDIR /src
COPY . .
# --locked: the committed Cargo.lock is what gets built.
RUN cargo build --release --locked

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# `dpdk` brings the librte_* libraries and most poll-mode drivers as Recommends, so recommends are
# NOT turned off here. The ENA driver (AWS) and the memif/ring/null virtual devices are not among
# them and are named explicitly (af_packet, pcap and tap are).
RUN apt-get update \
 && apt-get install -y dpdk librte-net-ena23 librte-net-memif23 librte-net-ring23 librte-net-null23 \
        iproute2 \
 && rm -rf /var/lib/apt/lists/*

COPY --from=builder /src/target/release/flowdog /usr/local/bin/flowdog
# Fail the image build, not the first start, if a shared library the binary needs is missing.
RUN ldd /usr/local/bin/flowdog | awk '/not found/ { print; bad = 1 } END { exit bad }' \
 && mkdir -p /etc/flowdog

ENTRYPOINT ["flowdog"]
CMD ["run", "--config", "/etc/flowdog/flowdog.toml"]
