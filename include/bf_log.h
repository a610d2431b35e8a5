/* bf_log.h: one leveled, thread-safe logging sink.
 *
 * Before the mount exists everything goes to stderr. A daemonised mount logs to syslog (and to
 * --log-file when given). Messages on the read path that could repeat per request use
 * bf_log_ratelimited(), keyed by a caller-chosen 64-bit key, so a broken source logs one clear
 * line, not one per page fault.
 */
#ifndef BF_LOG_H
#define BF_LOG_H

#include <stdint.h>
#include "bf_common.h"

enum bf_log_level { BF_LOG_ERROR = 0, BF_LOG_WARN, BF_LOG_INFO, BF_LOG_DEBUG };

void bf_log_set_level(enum bf_log_level lvl);
enum bf_log_level bf_log_get_level(void);
/* Parses error|warn|info|debug. Returns 0 or -1. */
int bf_log_parse_level(const char *s, enum bf_log_level *out);
/* Route output: stderr (default), syslog, and/or an append-only file. Thread-safe to call once
 * at start-up; not while other threads log. Returns 0 or -errno (file could not be opened). */
void bf_log_to_syslog(bool on);
int bf_log_to_file(const char *path);
void bf_log_to_stderr(bool on);

void bf_log(enum bf_log_level lvl, const char *fmt, ...) BF_PRINTF(2, 3);
/* At most one message per key per `interval_ms`; returns true if it was logged. */
bool bf_log_ratelimited(enum bf_log_level lvl, uint64_t key, unsigned interval_ms, const char *fmt, ...)
	BF_PRINTF(4, 5);

#define bf_error(...) bf_log(BF_LOG_ERROR, __VA_ARGS__)
#define bf_warn(...) bf_log(BF_LOG_WARN, __VA_ARGS__)
#define bf_info(...) bf_log(BF_LOG_INFO, __VA_ARGS__)
#define bf_debug(...) do { if (bf_log_get_level() >= BF_LOG_DEBUG) bf_log(BF_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
