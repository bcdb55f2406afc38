/* Real symbols for DPDK's static-inline fast-path functions, so Rust can call them. */
#ifndef FLOWDOG_SHIM_H
#define FLOWDOG_SHIM_H
#include <stdint.h>
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_version.h>
#include <rte_bus_vdev.h>

uint16_t flowdog_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t flowdog_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *flowdog_pktmbuf_alloc(struct rte_mempool *mp);
int flowdog_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void flowdog_pktmbuf_free(struct rte_mbuf *m);
char *flowdog_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int flowdog_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
char *flowdog_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *flowdog_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
void *flowdog_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t flowdog_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t flowdog_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t flowdog_pktmbuf_tailroom(const struct rte_mbuf *m);
int flowdog_errno(void);
unsigned flowdog_lcore_id(void);
uint64_t flowdog_rdtsc(void);
unsigned flowdog_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned flowdog_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned flowdog_ring_count(const struct rte_ring *r);
const char *flowdog_version(void);

/* Byte offsets of the rte_mbuf fields the fast path reads, so Rust reads them without a call. */
extern const uint32_t flowdog_mbuf_off_buf_addr;
extern const uint32_t flowdog_mbuf_off_data_off;
extern const uint32_t flowdog_mbuf_off_pkt_len;
extern const uint32_t flowdog_mbuf_off_data_len;
extern const uint32_t flowdog_mbuf_off_nb_segs;
#endif
