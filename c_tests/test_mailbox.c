/* test_mailbox.c
 *
 * Sphere mailboxes, after the original message-system tests:
 *   - FIFO within one priority; all fields (type, priority, sender,
 *     receiver, 4 payload words) arrive intact; sequence numbers count
 *     arrivals from 1;
 *   - priority order: send LOW, CRITICAL, NORMAL, HIGH, CRITICAL, HIGH, LOW
 *     -> receive CRITICAL x2 (in send order), HIGH x2, NORMAL, LOW x2;
 *   - capacity: mailbox_capacity = 4 -> the 5th send returns KS_FULL with
 *     an error message, nothing is lost (4 received), and the mailbox
 *     accepts again once drained;
 *   - who may talk: parent <-> child and siblings are fine; cousins
 *     (13 -> 25), grandparent (13 -> 0), self (13 -> 13) -> KS_ERROR;
 *   - try_receive on an empty mailbox -> KS_EMPTY; receive with a 10 ms
 *     timeout -> KS_TIMEOUT after about 10 ms; a receive blocked without
 *     limit wakes up on a send from another thread;
 *   - counters: messages_sent / messages_received / mailbox_size;
 *   - 4 producer pthreads (children 13..16 of sphere 1) x 100 messages to
 *     their parent 1 with a small mailbox (8) and 4 consumer pthreads: on
 *     KS_FULL a producer blocks on a condvar until a consumer took a
 *     message (no sleeping, no lost wake-up); every message is received
 *     exactly once, each producer's messages arrive in its send order
 *     (sequence numbers), and the counters add up.
 */
#include "test_util.h"

static KissingSpheresSystem *make_system(int levels, int capacity)
{
    KissingSpheresOptions o = tu_options(levels, 0);
    if (capacity > 0)
        o.mailbox_capacity = capacity;
    return tu_create_opts(&o);
}

static void fifo_same_priority(void)
{
    KissingSpheresSystem *sys = make_system(3, 0);
    if (sys == NULL)
        return;
    enum { M = 20 };
    for (int i = 0; i < M; i++) {
        uint64_t payload[4] = {(uint64_t)i, 0xDEADBEEF00000000ULL | (uint64_t)i, UINT64_MAX - (uint64_t)i, 42};
        int rc = kissing_spheres_send_message(sys, 13, 1, MSG_GRADIENT_READY, MSG_PRIORITY_NORMAL, payload);
        CHECKF(rc == KS_OK, "send %d (13 -> 1): %d %s", i, rc, tu_err());
    }
    KissingSphereStats st;
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 1, &st), KS_OK);
    CHECK_EQ_I64(st.mailbox_size, M);
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 13, &st), KS_OK);
    CHECK_EQ_I64(st.messages_sent, M);

    uint64_t last_seq = 0;
    for (int i = 0; i < M; i++) {
        KissingSphereMessage msg;
        memset(&msg, 0, sizeof msg);
        /* alternate the two receive calls */
        int rc = (i % 2) ? kissing_spheres_try_receive_message(sys, 1, &msg)
                         : kissing_spheres_receive_message(sys, 1, &msg, 1000);
        CHECKF(rc == KS_OK, "receive %d: %d %s", i, rc, tu_err());
        CHECKF(msg.payload[0] == (uint64_t)i, "FIFO: message %d has payload %" PRIu64, i, msg.payload[0]);
        CHECKF(msg.payload[1] == (0xDEADBEEF00000000ULL | (uint64_t)i) && msg.payload[2] == UINT64_MAX - (uint64_t)i &&
                   msg.payload[3] == 42,
               "message %d: payload words 1..3 corrupted", i);
        CHECKF(msg.type == MSG_GRADIENT_READY && msg.priority == MSG_PRIORITY_NORMAL,
               "message %d: type %u priority %u", i, msg.type, msg.priority);
        CHECKF(msg.sender_id == 13 && msg.receiver_id == 1, "message %d: sender %d receiver %d", i, msg.sender_id,
               msg.receiver_id);
        CHECKF(msg.sequence == (uint64_t)i + 1, "message %d: sequence %" PRIu64 ", expected %d", i, msg.sequence,
               i + 1);
        CHECKF(msg.sequence > last_seq, "sequence numbers not increasing: %" PRIu64 " after %" PRIu64, msg.sequence,
               last_seq);
        last_seq = msg.sequence;
    }
    KissingSphereMessage msg;
    CHECK_EQ_I64(kissing_spheres_try_receive_message(sys, 1, &msg), KS_EMPTY);
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 1, &st), KS_OK);
    CHECK_EQ_I64(st.messages_received, M);
    CHECK_EQ_I64(st.mailbox_size, 0);

    /* NULL payload = zeros; sequence numbers keep counting. */
    CHECK_EQ_I64(kissing_spheres_send_message(sys, 1, 13, MSG_WEIGHTS_BROADCAST, MSG_PRIORITY_LOW, NULL), KS_OK);
    memset(&msg, 0x77, sizeof msg);
    CHECK_EQ_I64(kissing_spheres_try_receive_message(sys, 13, &msg), KS_OK);
    CHECKF(msg.payload[0] == 0 && msg.payload[1] == 0 && msg.payload[2] == 0 && msg.payload[3] == 0,
           "NULL payload should arrive as zeros");
    CHECKF(msg.sequence == 1, "first message into sphere 13 has sequence %" PRIu64, msg.sequence);
    CHECK_EQ_I64(kissing_spheres_send_message(sys, 14, 1, MSG_STATS_REPORT, MSG_PRIORITY_LOW, NULL), KS_OK);
    CHECK_EQ_I64(kissing_spheres_try_receive_message(sys, 1, &msg), KS_OK);
    CHECKF(msg.sequence == M + 1, "sphere 1's %dth arrival has sequence %" PRIu64, M + 1, msg.sequence);
    kissing_spheres_free(sys);
}

static void priority_order(void)
{
    KissingSpheresSystem *sys = make_system(2, 0);
    if (sys == NULL)
        return;
    const uint32_t sent[7] = {MSG_PRIORITY_LOW,  MSG_PRIORITY_CRITICAL, MSG_PRIORITY_NORMAL, MSG_PRIORITY_HIGH,
                              MSG_PRIORITY_CRITICAL, MSG_PRIORITY_HIGH, MSG_PRIORITY_LOW};
    /* tags (send index) in the expected order of delivery */
    const int expected[7] = {1, 4, 3, 5, 2, 0, 6};
    for (int i = 0; i < 7; i++) {
        uint64_t payload[4] = {(uint64_t)i, 0, 0, 0};
        /* from different children of the root, to the root */
        CHECK_EQ_I64(kissing_spheres_send_message(sys, 1 + i, 0, (uint32_t)(MSG_EPOCH_START + i % 2), sent[i], payload),
                     KS_OK);
    }
    for (int k = 0; k < 7; k++) {
        KissingSphereMessage msg;
        int rc = kissing_spheres_receive_message(sys, 0, &msg, 0);
        CHECKF(rc == KS_OK, "receive %d: %d %s", k, rc, tu_err());
        CHECKF(msg.payload[0] == (uint64_t)expected[k],
               "priority order: delivery %d was message %" PRIu64 " (priority %u), expected message %d (priority %u)",
               k, msg.payload[0], msg.priority, expected[k], sent[expected[k]]);
        CHECKF(msg.priority == sent[expected[k]], "delivery %d: priority %u", k, msg.priority);
        CHECKF(msg.sender_id == 1 + expected[k], "delivery %d: sender %d, expected %d", k, msg.sender_id,
               1 + expected[k]);
        CHECKF(msg.sequence == (uint64_t)expected[k] + 1, "delivery %d: sequence %" PRIu64 " (arrival number %d)", k,
               msg.sequence, expected[k] + 1);
    }
    kissing_spheres_free(sys);
}

static void capacity(void)
{
    KissingSpheresSystem *sys = make_system(2, 4);
    if (sys == NULL)
        return;
    for (int i = 0; i < 4; i++) {
        uint64_t p[4] = {(uint64_t)i, 0, 0, 0};
        CHECK_EQ_I64(kissing_spheres_send_message(sys, 3, 0, MSG_GRADIENT_READY, MSG_PRIORITY_NORMAL, p), KS_OK);
    }
    uint64_t p5[4] = {99, 0, 0, 0};
    CHECK_ERR(kissing_spheres_send_message(sys, 3, 0, MSG_GRADIENT_READY, MSG_PRIORITY_NORMAL, p5), KS_FULL);
    /* A higher priority does not make room either. */
    CHECK_ERR(kissing_spheres_send_message(sys, 4, 0, MSG_ERROR_REPORT, MSG_PRIORITY_CRITICAL, p5), KS_FULL);
    KissingSphereStats st;
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 0, &st), KS_OK);
    CHECK_EQ_I64(st.mailbox_size, 4);
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 3, &st), KS_OK);
    CHECKF(st.messages_sent == 4, "messages_sent(3)=%" PRIu64 ": a rejected send must not count", st.messages_sent);
    /* Other mailboxes are independent. */
    CHECK_EQ_I64(kissing_spheres_send_message(sys, 0, 3, MSG_WORK_OFFER, MSG_PRIORITY_NORMAL, NULL), KS_OK);

    int got = 0;
    KissingSphereMessage msg;
    while (kissing_spheres_try_receive_message(sys, 0, &msg) == KS_OK) {
        CHECKF(msg.payload[0] == (uint64_t)got, "capacity: message %d has payload %" PRIu64, got, msg.payload[0]);
        got++;
        if (got > 10)
            break;
    }
    CHECKF(got == 4, "capacity 4: received %d messages, expected 4", got);
    /* Drained: accepts again. */
    CHECK_EQ_I64(kissing_spheres_send_message(sys, 3, 0, MSG_GRADIENT_READY, MSG_PRIORITY_NORMAL, p5), KS_OK);
    CHECK_EQ_I64(kissing_spheres_try_receive_message(sys, 0, &msg), KS_OK);
    CHECK_EQ_I64(msg.payload[0], 99);
    CHECK_EQ_I64(kissing_spheres_try_receive_message(sys, 3, &msg), KS_OK);
    kissing_spheres_free(sys);
}

static void relations(void)
{
    KissingSpheresSystem *sys = make_system(3, 0);
    if (sys == NULL)
        return;
    struct {
        int from, to, rc;
    } cases[] = {
        {13, 14, KS_OK},    {14, 13, KS_OK},    {13, 24, KS_OK},    {13, 1, KS_OK},     {1, 13, KS_OK},
        {1, 24, KS_OK},     {0, 1, KS_OK},      {12, 0, KS_OK},     {1, 12, KS_OK},     {156, 12, KS_OK},
        {13, 25, KS_ERROR}, {25, 13, KS_ERROR}, {13, 0, KS_ERROR},  {0, 13, KS_ERROR},  {13, 13, KS_ERROR},
        {0, 0, KS_ERROR},   {1, 25, KS_ERROR},  {13, 2, KS_ERROR},  {13, 157, KS_ERROR}, {-1, 0, KS_ERROR},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cllm_clear_error();
        int rc = kissing_spheres_send_message(sys, cases[i].from, cases[i].to, MSG_SIBLING_DISCOVER,
                                              MSG_PRIORITY_NORMAL, NULL);
        CHECKF(rc == cases[i].rc, "send %d -> %d returned %d, expected %d", cases[i].from, cases[i].to, rc,
               cases[i].rc);
        if (cases[i].rc == KS_ERROR)
            CHECKF(tu_error_is_set(), "send %d -> %d: no error message", cases[i].from, cases[i].to);
    }
    /* Every message type and priority in range is accepted. */
    for (uint32_t t = 0; t <= MSG_SHUTDOWN_ACK; t++)
        for (uint32_t p = 0; p <= MSG_PRIORITY_CRITICAL; p++)
            CHECKF(kissing_spheres_send_message(sys, 2, 0, t, p, NULL) == KS_OK, "type %u priority %u rejected: %s",
                   t, p, tu_err());
    CHECK_ERR(kissing_spheres_send_message(sys, 2, 0, MSG_SHUTDOWN_ACK + 1, MSG_PRIORITY_NORMAL, NULL), KS_ERROR);
    CHECK_ERR(kissing_spheres_send_message(sys, 2, 0, MSG_WORK_REQUEST, MSG_PRIORITY_CRITICAL + 1, NULL), KS_ERROR);
    kissing_spheres_free(sys);
}

typedef struct {
    KissingSpheresSystem *sys;
    int rc;
    KissingSphereMessage msg;
} BlockedReceiver;

static void *blocked_receiver(void *arg)
{
    BlockedReceiver *b = arg;
    b->rc = kissing_spheres_receive_message(b->sys, 5, &b->msg, -1);
    return NULL;
}

static void empty_and_timeouts(void)
{
    KissingSpheresSystem *sys = make_system(2, 0);
    if (sys == NULL)
        return;
    KissingSphereMessage msg;
    CHECK_EQ_I64(kissing_spheres_try_receive_message(sys, 0, &msg), KS_EMPTY);
    CHECK_EQ_I64(kissing_spheres_try_receive_message(sys, 12, &msg), KS_EMPTY);
    double t0 = tu_now();
    int rc = kissing_spheres_receive_message(sys, 0, &msg, 10);
    double dt = tu_now() - t0;
    CHECKF(rc == KS_TIMEOUT, "receive(10 ms) on an empty mailbox returned %d", rc);
    CHECKF(dt >= 0.009 && dt < 2.0, "receive(10 ms) returned after %.4f s", dt);
    CHECKF(kissing_spheres_receive_message(sys, 0, &msg, 0) == KS_TIMEOUT, "receive(0 ms) on empty should time out");

    /* A receive without limit is woken by a send from another thread. */
    BlockedReceiver b = {.sys = sys, .rc = -99};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, blocked_receiver, &b) == 0);
    uint64_t p[4] = {7, 8, 9, 10};
    CHECK_EQ_I64(kissing_spheres_send_message(sys, 0, 5, MSG_PARENT_SYNC, MSG_PRIORITY_HIGH, p), KS_OK);
    pthread_join(th, NULL);
    CHECK_EQ_I64(b.rc, KS_OK);
    CHECKF(b.msg.payload[0] == 7 && b.msg.payload[3] == 10 && b.msg.type == MSG_PARENT_SYNC && b.msg.sender_id == 0,
           "blocked receiver got the wrong message");
    kissing_spheres_free(sys);
}

/* ---- producers / consumers ------------------------------------------- */

enum { PRODUCERS = 4, CONSUMERS = 4, PER_PRODUCER = 100, TOTAL_MSGS = PRODUCERS * PER_PRODUCER };

typedef struct {
    KissingSpheresSystem *sys;
    int receiver;
    pthread_mutex_t m;
    pthread_cond_t space; /* a consumer took a message */
    uint64_t taken;       /* messages taken, under m */
    atomic_int received;
    atomic_int full_count;
    atomic_int errors;
    atomic_int got[TOTAL_MSGS];
    uint64_t seq_of[TOTAL_MSGS]; /* written once per id */
    double deadline;
} PC;

typedef struct {
    PC *pc;
    int index;
} PArg;

static void *producer(void *arg)
{
    PArg *a = arg;
    PC *pc = a->pc;
    int from = 13 + a->index; /* children of sphere 1 */
    uint32_t prio = (uint32_t)(a->index % 4);
    for (int i = 0; i < PER_PRODUCER; i++) {
        uint64_t payload[4] = {(uint64_t)(a->index * PER_PRODUCER + i), (uint64_t)a->index, (uint64_t)i, 0};
        for (;;) {
            pthread_mutex_lock(&pc->m);
            uint64_t taken_before = pc->taken;
            pthread_mutex_unlock(&pc->m);
            int rc = kissing_spheres_send_message(pc->sys, from, pc->receiver, MSG_GRADIENT_ACCUMULATE, prio, payload);
            if (rc == KS_OK)
                break;
            if (rc != KS_FULL || tu_now() > pc->deadline) {
                atomic_fetch_add(&pc->errors, 1);
                return NULL;
            }
            atomic_fetch_add(&pc->full_count, 1);
            /* Wait until a consumer took something since our attempt.
             * `taken` changes under m, so the wake-up cannot be lost; the
             * timed wait only bounds a broken library. */
            pthread_mutex_lock(&pc->m);
            struct timespec dl = tu_deadline_ms(1000);
            while (pc->taken == taken_before) {
                if (pthread_cond_timedwait(&pc->space, &pc->m, &dl) == ETIMEDOUT)
                    break;
            }
            pthread_mutex_unlock(&pc->m);
        }
    }
    return NULL;
}

static void *consumer(void *arg)
{
    PC *pc = arg;
    while (atomic_load(&pc->received) < TOTAL_MSGS && tu_now() < pc->deadline) {
        KissingSphereMessage msg;
        int rc = kissing_spheres_receive_message(pc->sys, pc->receiver, &msg, 20);
        if (rc == KS_TIMEOUT)
            continue;
        if (rc != KS_OK) {
            atomic_fetch_add(&pc->errors, 1);
            break;
        }
        pthread_mutex_lock(&pc->m);
        pc->taken++;
        pthread_cond_broadcast(&pc->space);
        pthread_mutex_unlock(&pc->m);
        uint64_t id = msg.payload[0];
        if (id >= TOTAL_MSGS || msg.sender_id != 13 + (int)msg.payload[1] ||
            msg.priority != (uint32_t)(msg.payload[1] % 4)) {
            atomic_fetch_add(&pc->errors, 1);
            continue;
        }
        if (atomic_fetch_add(&pc->got[id], 1) == 0)
            pc->seq_of[id] = msg.sequence;
        atomic_fetch_add(&pc->received, 1);
    }
    return NULL;
}

static void producers_consumers(void)
{
    KissingSpheresSystem *sys = make_system(3, 8);
    if (sys == NULL)
        return;
    PC *pc = calloc(1, sizeof *pc);
    pc->sys = sys;
    pc->receiver = 1;
    pthread_mutex_init(&pc->m, NULL);
    pthread_cond_init(&pc->space, NULL);
    pc->deadline = tu_now() + 30.0;
    pthread_t prod[PRODUCERS], cons[CONSUMERS];
    PArg args[PRODUCERS];
    for (int c = 0; c < CONSUMERS; c++)
        CHECK(pthread_create(&cons[c], NULL, consumer, pc) == 0);
    for (int p = 0; p < PRODUCERS; p++) {
        args[p] = (PArg){pc, p};
        CHECK(pthread_create(&prod[p], NULL, producer, &args[p]) == 0);
    }
    for (int p = 0; p < PRODUCERS; p++)
        pthread_join(prod[p], NULL);
    for (int c = 0; c < CONSUMERS; c++)
        pthread_join(cons[c], NULL);

    printf("mailbox: %d sends were rejected with KS_FULL and retried\n", atomic_load(&pc->full_count));
    CHECKF(atomic_load(&pc->errors) == 0, "%d unexpected return codes / malformed messages", atomic_load(&pc->errors));
    CHECKF(atomic_load(&pc->received) == TOTAL_MSGS, "received %d of %d messages", atomic_load(&pc->received),
           TOTAL_MSGS);
    int missing = 0, dup = 0;
    for (int i = 0; i < TOTAL_MSGS; i++) {
        int g = atomic_load(&pc->got[i]);
        if (g == 0)
            missing++;
        else if (g > 1)
            dup++;
    }
    CHECKF(missing == 0 && dup == 0, "%d messages lost, %d received more than once", missing, dup);
    /* Sequence numbers: unique arrival numbers 1..400, and each producer's
     * messages arrived in its send order. */
    static bool seq_used[TOTAL_MSGS + 1];
    memset(seq_used, 0, sizeof seq_used);
    int bad_seq = 0, order_errors = 0;
    for (int p = 0; p < PRODUCERS; p++) {
        uint64_t last = 0;
        for (int i = 0; i < PER_PRODUCER; i++) {
            uint64_t s = pc->seq_of[p * PER_PRODUCER + i];
            if (s < 1 || s > TOTAL_MSGS || seq_used[s])
                bad_seq++;
            else
                seq_used[s] = true;
            if (s <= last)
                order_errors++;
            last = s;
        }
    }
    CHECKF(bad_seq == 0, "%d sequence numbers outside 1..%d or repeated", bad_seq, TOTAL_MSGS);
    CHECKF(order_errors == 0, "%d messages overtook an earlier one of the same producer", order_errors);

    KissingSphereStats st;
    long long sent = 0;
    for (int p = 0; p < PRODUCERS; p++) {
        CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 13 + p, &st), KS_OK);
        CHECKF(st.messages_sent == PER_PRODUCER, "messages_sent(%d)=%" PRIu64, 13 + p, st.messages_sent);
        sent += (long long)st.messages_sent;
    }
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 1, &st), KS_OK);
    CHECKF(st.messages_received == TOTAL_MSGS, "messages_received(1)=%" PRIu64, st.messages_received);
    CHECK_EQ_I64(st.mailbox_size, 0);
    CHECK_EQ_I64(sent, TOTAL_MSGS);
    CHECK_EQ_I64(TU_SUM_STAT(sys, messages_sent), TOTAL_MSGS);
    CHECK_EQ_I64(TU_SUM_STAT(sys, messages_received), TOTAL_MSGS);
    pthread_mutex_destroy(&pc->m);
    pthread_cond_destroy(&pc->space);
    free(pc);
    kissing_spheres_free(sys);
}

/* Mailboxes work while the scheduler runs, including from callbacks. */
typedef struct {
    KissingSpheresSystem *sys;
    atomic_int send_errors;
} CbCtx;

static void sending_cb(uint64_t item, int sphere_id, void *user_data)
{
    CbCtx *c = user_data;
    KissingSphereInfo info;
    if (kissing_spheres_sphere_info(c->sys, sphere_id, &info) != KS_OK || info.parent_id < 0) {
        atomic_fetch_add(&c->send_errors, 1);
        return;
    }
    uint64_t p[4] = {item, (uint64_t)sphere_id, 0, 0};
    if (kissing_spheres_send_message(c->sys, sphere_id, info.parent_id, MSG_BATCH_COMPLETE, MSG_PRIORITY_NORMAL, p) !=
        KS_OK)
        atomic_fetch_add(&c->send_errors, 1);
}

static void from_callbacks(void)
{
    KissingSpheresSystem *sys = make_system(2, 1000);
    if (sys == NULL)
        return;
    CbCtx c = {.sys = sys};
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, sending_cb, &c), KS_OK);
    CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, 500), KS_OK);
    CHECKF(kissing_spheres_wait(sys, 10000) == KS_OK, "wait: %s", tu_err());
    CHECK_EQ_I64(atomic_load(&c.send_errors), 0);
    static int seen[500];
    memset(seen, 0, sizeof seen);
    int n = 0;
    KissingSphereMessage msg;
    while (kissing_spheres_try_receive_message(sys, 0, &msg) == KS_OK && n < 1000) {
        if (msg.payload[0] < 500)
            seen[msg.payload[0]]++;
        n++;
    }
    int bad = 0;
    for (int i = 0; i < 500; i++)
        bad += seen[i] != 1;
    CHECKF(n == 500 && bad == 0, "from callbacks: root got %d messages, %d items not exactly once", n, bad);
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    kissing_spheres_free(sys);
}

int main(void)
{
    tu_begin(60);
    fifo_same_priority();
    priority_order();
    capacity();
    relations();
    empty_and_timeouts();
    for (int round = 0; round < 3; round++)
        producers_consumers();
    from_callbacks();
    return tu_finish("test_mailbox");
}
