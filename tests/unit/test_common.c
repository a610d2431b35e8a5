/* test_common.c: size parsing, typo suggestions, error messages. */
#include "bf_common.h"
#include "bf_test.h"

BF_TEST(size_suffixes)
{
	uint64_t v;
	EXPECT(bf_parse_size("512M", &v) == 0); EXPECT_EQ_U64(v, 512ull << 20);
	EXPECT(bf_parse_size("2G", &v) == 0); EXPECT_EQ_U64(v, 2ull << 30);
	EXPECT(bf_parse_size("5e9", &v) == 0); EXPECT_EQ_U64(v, 5000000000ull);
	EXPECT(bf_parse_size("5GB", &v) == 0); EXPECT_EQ_U64(v, 5000000000ull);
	EXPECT(bf_parse_size("64k", &v) == 0); EXPECT_EQ_U64(v, 65536);
	EXPECT(bf_parse_size("1048576", &v) == 0); EXPECT_EQ_U64(v, 1048576);
	EXPECT(bf_parse_size("0", &v) == 0); EXPECT_EQ_U64(v, 0);
	EXPECT(bf_parse_size("", &v) < 0);
	EXPECT(bf_parse_size("-1", &v) < 0);
	EXPECT(bf_parse_size("12X", &v) < 0);
	EXPECT(bf_parse_size("1.5", &v) < 0);
	EXPECT(bf_parse_size("1e30", &v) < 0);
	EXPECT(bf_parse_size("nan", &v) < 0);
}

BF_TEST(suggest)
{
	static const char *const keys[] = { "density", "weight", "gamma", "epsilon", "random_seed" };
	EXPECT_STR_EQ(bf_suggest("densty", keys, 5), "density");
	EXPECT_STR_EQ(bf_suggest("wieght", keys, 5), "weight");
	EXPECT_STR_EQ(bf_suggest("seed", keys, 5), "random_seed");
	EXPECT(bf_suggest("xyzzy", keys, 5) == NULL);
}

BF_TEST(first_error_wins)
{
	struct bf_err e = { { 0 } };
	EXPECT(bf_errf(&e, "first %d", 1) == -1);
	bf_errf(&e, "second");
	EXPECT_STR_EQ(e.msg, "first 1");
	bf_err_prefix(&e, "ctx");
	EXPECT_STR_EQ(e.msg, "ctx: first 1");
}

int main(void)
{
	RUN(size_suffixes);
	RUN(suggest);
	RUN(first_error_wins);
	return bf_test_report();
}
