// simdjson peer for the JSON benchmark: DOM parser, one parser object reused
// across runs (its documented best practice), input loaded into a
// padded_string once. Prints "result WORKLOAD simdjson parse median min max".
//   bench_simdjson FILE WORKLOAD [ndjson]
#include <simdjson.h>
#include <algorithm>
#include <time.h>
#include <cstdio>
#include <cstring>
#include <vector>

// CPU time of this thread, as for the C contenders (the machine is shared)
static double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        std::fprintf(stderr, "usage: bench_simdjson FILE WORKLOAD [ndjson]\n");
        return 2;
    }
    bool ndjson = argc > 3 && std::strcmp(argv[3], "ndjson") == 0;
    simdjson::padded_string json;
    if (simdjson::padded_string::load(argv[1]).get(json)) {
        std::fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    simdjson::dom::parser parser;
    auto once = [&]() -> long {
        if (ndjson) {
            long n = 0;
            simdjson::dom::document_stream docs;
            if (parser.parse_many(json).get(docs)) {
                std::fprintf(stderr, "simdjson parse_many failed\n");
                std::exit(1);
            }
            for (auto doc : docs) {
                simdjson::dom::element e;
                if (doc.get(e)) {
                    std::fprintf(stderr, "simdjson: bad record\n");
                    std::exit(1);
                }
                n++;
            }
            return n;
        }
        simdjson::dom::element e;
        if (parser.parse(json).get(e)) {
            std::fprintf(stderr, "simdjson parse failed\n");
            std::exit(1);
        }
        return e.is_object() ? 1 : 0;
    };
    const int runs = 7;
    std::vector<double> r;
    long sink = once();
    for (int i = 0; i < runs; i++) {
        double t0 = now_s(), t;
        long reps = 0;
        do {
            sink += once();
            reps++;
            t = now_s() - t0;
        } while (t < 0.06);
        r.push_back((double)json.size() * (double)reps / t / 1e6);
    }
    std::sort(r.begin(), r.end());
    std::printf("result %s simdjson parse %.1f %.1f %.1f\n", argv[2], r[runs / 2], r[0], r[runs - 1]);
    std::fprintf(stderr, "  %s simdjson parse: median %.1f MB/s (checksum %ld)\n", argv[2], r[runs / 2], sink);
    return 0;
}
