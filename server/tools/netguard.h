/* The outbound network policy for tool fetches: which special-purpose addresses (loopback,
 * private, link-local, metadata, multicast, ...) a connection may reach. Checked on the address a
 * socket is about to connect to, so DNS rebinding and redirects cannot get around it. */
#ifndef AZ_NETGUARD_H
#define AZ_NETGUARD_H

#include <curl/curl.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/err.h"

typedef struct az_netguard az_netguard;

/* The most CIDR entries one policy may list. */
#define AZ_NETGUARD_MAX_ENTRIES 64

/* The policy an embedded deployment passes when it talks to local models: loopback only. It is a
 * default for the daemon's configuration to use, not something this module applies by itself. */
#define AZ_NETGUARD_LOOPBACK "127.0.0.0/8,::1/128"

/* Parses an AGENTZ_ALLOW_PRIVATE_NETWORKS value into *out:
 *   NULL, "" or "0"  every special-purpose range is refused (public addresses are allowed);
 *   "1"              every address is allowed;
 *   a CIDR list      "127.0.0.0/8,10.1.0.0/16,::1/128,fd00::/8": those ranges are allowed on top of
 *                    public addresses. A bare address is a single host (/32 or /128). Spaces
 *                    around entries and empty entries are ignored. IPv4 entries also match
 *                    IPv4-mapped IPv6 (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses.
 * The caller owns *out and frees it with az_netguard_free. On bad input returns AZ_ERR_INVALID
 * with msg naming the entry ("AGENTZ_ALLOW_PRIVATE_NETWORKS: entry \"10.0.0.0/33\": prefix
 * length must be 0-32"), and AZ_ERR_NOMEM when out of memory; *out is then NULL. */
az_err az_netguard_new(const char *policy, az_netguard **out, char *msg);

/* Frees g; accepts NULL. */
void az_netguard_free(az_netguard *g);

/* 1 when a connection to sa (AF_INET or AF_INET6; the port is ignored) is allowed by g, else 0.
 * A NULL g is the strictest policy ("0"). Other address families are always refused. Safe to
 * call from many threads at once. */
int az_netguard_allowed(const az_netguard *g, const struct sockaddr *sa);

/* The name of the special-purpose range sa falls in ("loopback", "private", "link-local", ...),
 * or NULL for an ordinary public address. IPv4-mapped and NAT64 IPv6 addresses are named by the
 * IPv4 address they carry. For messages only: the decision is az_netguard_allowed's. */
const char *az_netguard_range_name(const struct sockaddr *sa);

/* Writes sa's address (no port) into buf as text, "?" for unknown families. Returns buf. */
char *az_netguard_addr_text(const struct sockaddr *sa, char *buf, size_t len);

/* A libcurl transfer under the policy: what its connections did. */
typedef struct az_netguard_curl {
    const az_netguard *guard;  /* set by the caller; borrowed */
    int opened;                /* sockets opened */
    int refused;               /* connection attempts refused */
    char refused_addr[64];     /* the first refused address as text; "" = none */
    const char *refused_range; /* its range name (az_netguard_range_name), or "unsupported
                                * address family"; NULL when none was refused */
} az_netguard_curl;

/* Makes every connection of easy handle h (first URL, redirects, happy-eyeballs attempts) check
 * the address curl is about to connect to against st->guard: the URL's host name proves nothing
 * and DNS answers change, so the check must sit right before connect. Sets
 * CURLOPT_OPENSOCKETFUNCTION and CURLOPT_OPENSOCKETDATA; st (guard set, the rest zeroed) is
 * written from curl's callbacks and must outlive the transfer. A refused connection fails the
 * transfer with CURLE_COULDNT_CONNECT once no address is left. Returns curl_easy_setopt's code. */
CURLcode az_netguard_curl_use(CURL *h, az_netguard_curl *st);

#endif
