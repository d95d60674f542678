/*
 * What one shard's sync costs beside another's on this disk, outside the
 * server: is one syncfs(2) for every shard's segment cheaper than an
 * fdatasync(2) per segment? (docs/BENCHMARKS.md, "One sync per node?")
 *
 *   gcc -O2 -pthread bench/scripts/sync-probe.c -o /tmp/sync-probe
 *   cd DIR_ON_THE_DISK && /tmp/sync-probe MODE THREADS
 *
 * MODE 0: each round writes 8 KiB and calls fdatasync; MODE 1: syncfs.
 * THREADS 1 or 2: one file per thread, rounds in parallel (two shards).
 * Then one thread writes 8 KiB to each of two files per round and makes
 * both durable: two fdatasyncs (MODE 0) or one syncfs (MODE 1).
 * The files (64 MiB each, zero-filled and synced first, as the server's
 * segments are ahead of their records) are called a and b.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 3000
#define FILE_SIZE (64 << 20)
#define WRITE_SIZE 8192

static char buf[WRITE_SIZE];
static int fds[2];
static int use_syncfs;
static double per_round[2];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int zeroed_file(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    char *zeros = calloc(1, 1 << 20);
    if (fd < 0 || !zeros) {
        perror(path);
        exit(1);
    }
    for (int i = 0; i < FILE_SIZE / (1 << 20); i++)
        if (write(fd, zeros, 1 << 20) != 1 << 20) {
            perror("write");
            exit(1);
        }
    fdatasync(fd);
    free(zeros);
    return fd;
}

static void durable(int fd) {
    if ((use_syncfs ? syncfs(fd) : fdatasync(fd)) != 0) {
        perror("sync");
        exit(1);
    }
}

static void *shard(void *arg) {
    long i = (long)arg;
    double t0 = now();
    for (int k = 0; k < ROUNDS; k++) {
        if (pwrite(fds[i], buf, WRITE_SIZE, (off_t)k * WRITE_SIZE) != WRITE_SIZE) {
            perror("pwrite");
            exit(1);
        }
        durable(fds[i]);
    }
    per_round[i] = (now() - t0) / ROUNDS;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s 0|1 1|2\n", argv[0]);
        return 2;
    }
    use_syncfs = atoi(argv[1]);
    int threads = atoi(argv[2]) == 2 ? 2 : 1;
    const char *how = use_syncfs ? "syncfs" : "fdatasync";
    memset(buf, 'x', sizeof buf);
    fds[0] = zeroed_file("a");
    fds[1] = zeroed_file("b");
    pthread_t t[2];
    for (long i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, shard, (void *)i);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < threads; i++)
        printf("%s, %d thread(s), thread %d: %.0f us per round\n", how, threads, i,
               per_round[i] * 1e6);
    off_t off = FILE_SIZE / 2;
    double t0 = now();
    for (int k = 0; k < ROUNDS; k++, off += WRITE_SIZE) {
        if (pwrite(fds[0], buf, WRITE_SIZE, off) != WRITE_SIZE ||
            pwrite(fds[1], buf, WRITE_SIZE, off) != WRITE_SIZE) {
            perror("pwrite");
            return 1;
        }
        if (use_syncfs) {
            durable(fds[0]);
        } else {
            durable(fds[0]);
            durable(fds[1]);
        }
    }
    printf("one thread, both files, %s: %.0f us per round\n",
           use_syncfs ? "one syncfs" : "two fdatasyncs", (now() - t0) / ROUNDS * 1e6);
    unlink("a");
    unlink("b");
    return 0;
}
