/* bf_test.h: a tiny unit-test harness (in the spirit of redis' testhelp.h).
 *
 *   BF_TEST(name) { ... EXPECT(cond); EXPECT_EQ_U64(a, b); EXPECT_STR_CONTAINS(s, sub); ... }
 *   int main(void) { RUN(name); ...; return bf_test_report(); }
 *
 * A failed EXPECT prints file:line and the values, marks the current test failed and goes on.
 * bf_test_report() prints "N passed, N failed" and returns the exit code. BF_TEST_ONLY=a,b runs
 * only the tests named (the thread-sanitizer pass of scripts/test.sh picks the threaded ones).
 */
#ifndef BF_TEST_H
#define BF_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bf_t_passed, bf_t_failed, bf_t_cur_failed;
static const char *bf_t_name;

#define BF_TEST(name) static void name(void)
/* BF_TEST_ONLY unset, or naming this test in its comma-separated list */
static inline int bf_t_selected(const char *name)
{
	const char *only = getenv("BF_TEST_ONLY");
	size_t n = strlen(name);
	for (const char *p = only; p && *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
		if (strcspn(p, ",") == n && !strncmp(p, name, n))
			return 1;
	}
	return !only;
}
#define RUN(name) do { if (!bf_t_selected(#name)) break; bf_t_name = #name; bf_t_cur_failed = 0; name(); \
	if (bf_t_cur_failed) { bf_t_failed++; printf("FAIL  %s\n", #name); } \
	else { bf_t_passed++; printf("ok    %s\n", #name); } fflush(stdout); } while (0)

#define BF_T_FAIL(...) do { printf("  %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); \
	printf("\n"); bf_t_cur_failed = 1; } while (0)

#define EXPECT(c) do { if (!(c)) BF_T_FAIL("expected %s", #c); } while (0)
#define EXPECT_EQ_U64(a, b) do { uint64_t _a = (uint64_t)(a), _b = (uint64_t)(b); \
	if (_a != _b) BF_T_FAIL("%s == %s: %" PRIu64 " != %" PRIu64, #a, #b, _a, _b); } while (0)
#define EXPECT_EQ_I64(a, b) do { int64_t _a = (int64_t)(a), _b = (int64_t)(b); \
	if (_a != _b) BF_T_FAIL("%s == %s: %" PRId64 " != %" PRId64, #a, #b, _a, _b); } while (0)
#define EXPECT_EQ_HEX(a, b) do { uint64_t _a = (uint64_t)(a), _b = (uint64_t)(b); \
	if (_a != _b) BF_T_FAIL("%s == %s: 0x%" PRIx64 " != 0x%" PRIx64, #a, #b, _a, _b); } while (0)
#define EXPECT_EQ_DBL(a, b) do { double _a = (a), _b = (b); \
	if (!(_a == _b)) BF_T_FAIL("%s == %s: %.17g != %.17g", #a, #b, _a, _b); } while (0)
#define EXPECT_NEAR(a, b, tol) do { double _a = (a), _b = (b); \
	if (!(_a - _b <= (tol) && _b - _a <= (tol))) BF_T_FAIL("%s ~ %s: %.17g vs %.17g", #a, #b, _a, _b); } while (0)
#define EXPECT_STR_EQ(a, b) do { const char *_a = (a), *_b = (b); \
	if (!_a || !_b || strcmp(_a, _b)) BF_T_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, _a ? _a : "(null)", _b ? _b : "(null)"); } while (0)
#define EXPECT_STR_CONTAINS(s, sub) do { const char *_s = (s), *_u = (sub); \
	if (!_s || !strstr(_s, _u)) BF_T_FAIL("\"%s\" does not contain \"%s\"", _s ? _s : "(null)", _u); } while (0)

static inline int bf_test_report(void)
{
	printf("%d passed, %d failed\n", bf_t_passed, bf_t_failed);
	return bf_t_failed ? 1 : 0;
}

#endif
