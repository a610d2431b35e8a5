/* bf_log.c: leveled logging to stderr, syslog and/or a file; one mutex, one line per call. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "bf_log.h"

static _Atomic int g_level = BF_LOG_INFO;
static bool g_stderr = true, g_syslog = false;
static FILE *g_file;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void bf_log_set_level(enum bf_log_level lvl) { atomic_store(&g_level, (int)lvl); }
enum bf_log_level bf_log_get_level(void) { return (enum bf_log_level)atomic_load(&g_level); }

int bf_log_parse_level(const char *s, enum bf_log_level *out)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, level_names[i])) {
			*out = (enum bf_log_level)i;
			return 0;
		}
	if (!strcmp(s, "warning")) {
		*out = BF_LOG_WARN;
		return 0;
	}
	return -1;
}

void bf_log_to_syslog(bool on)
{
	if (on && !g_syslog)
		openlog("blendfs", LOG_PID, LOG_DAEMON);
	g_syslog = on;
}

void bf_log_to_stderr(bool on) { g_stderr = on; }

int bf_log_to_file(const char *path)
{
	FILE *f = fopen(path, "ae");
	if (!f)
		return -errno;
	setvbuf(f, NULL, _IOLBF, 0);
	pthread_mutex_lock(&g_lock);
	if (g_file)
		fclose(g_file);
	g_file = f;
	pthread_mutex_unlock(&g_lock);
	return 0;
}

static void vlog(enum bf_log_level lvl, const char *fmt, va_list ap) BF_PRINTF(2, 0);
static void vlog(enum bf_log_level lvl, const char *fmt, va_list ap)
{
	char msg[4096];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	pthread_mutex_lock(&g_lock);
	if (g_stderr)
		fprintf(stderr, "blendfs: %s%s%s\n", lvl <= BF_LOG_WARN ? level_names[lvl] : "",
			lvl <= BF_LOG_WARN ? ": " : "", msg);
	if (g_file) {
		struct timespec ts;
		struct tm tm;
		char when[32];
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(g_file, "%s.%03ldZ %s: %s\n", when, ts.tv_nsec / 1000000, level_names[lvl], msg);
	}
	if (g_syslog) {
		static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
		syslog(prio[lvl], "%s", msg);
	}
	pthread_mutex_unlock(&g_lock);
}

void bf_log(enum bf_log_level lvl, const char *fmt, ...)
{
	if ((int)lvl > atomic_load(&g_level))
		return;
	va_list ap;
	va_start(ap, fmt);
	vlog(lvl, fmt, ap);
	va_end(ap);
}

/* A small direct-mapped table of (key, last time): collisions only make logging more frequent. */
#define RL_SLOTS 256
static _Atomic uint64_t rl_key[RL_SLOTS], rl_when[RL_SLOTS];

bool bf_log_ratelimited(enum bf_log_level lvl, uint64_t key, unsigned interval_ms, const char *fmt, ...)
{
	if ((int)lvl > atomic_load(&g_level))
		return false;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	unsigned slot = (unsigned)((key * 0x9E3779B97F4A7C15ull) >> 56);
	uint64_t k = atomic_load(&rl_key[slot]), w = atomic_load(&rl_when[slot]);
	if (k == key && w && now - w < interval_ms)
		return false;
	atomic_store(&rl_key[slot], key);
	atomic_store(&rl_when[slot], now ? now : 1);
	va_list ap;
	va_start(ap, fmt);
	vlog(lvl, fmt, ap);
	va_end(ap);
	return true;
}
