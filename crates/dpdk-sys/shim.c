#include <stddef.h>
#include "shim.h"

uint16_t flowdog_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }
uint16_t flowdog_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }
struct rte_mbuf *flowdog_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int flowdog_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n)
{ return rte_pktmbuf_alloc_bulk(mp, mbufs, n); }
void flowdog_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *flowdog_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
int flowdog_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
char *flowdog_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *flowdog_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
void *flowdog_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
uint16_t flowdog_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t flowdog_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t flowdog_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
int flowdog_errno(void) { return rte_errno; }
unsigned flowdog_lcore_id(void) { return rte_lcore_id(); }
uint64_t flowdog_rdtsc(void) { return rte_rdtsc(); }
unsigned flowdog_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{ return rte_ring_enqueue_burst(r, objs, n, NULL); }
unsigned flowdog_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{ return rte_ring_dequeue_burst(r, objs, n, NULL); }
unsigned flowdog_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
const char *flowdog_version(void) { return rte_version(); }

const uint32_t flowdog_mbuf_off_buf_addr = offsetof(struct rte_mbuf, buf_addr);
const uint32_t flowdog_mbuf_off_data_off = offsetof(struct rte_mbuf, data_off);
const uint32_t flowdog_mbuf_off_pkt_len = offsetof(struct rte_mbuf, pkt_len);
const uint32_t flowdog_mbuf_off_data_len = offsetof(struct rte_mbuf, data_len);
const uint32_t flowdog_mbuf_off_nb_segs = offsetof(struct rte_mbuf, nb_segs);
