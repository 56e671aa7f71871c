#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<name>/: a few small, valid (and a few
almost valid) inputs per harness, so fuzzing starts from the shapes the services see.
Protobuf messages are encoded by hand (no protobuf package needed). Run from anywhere;
it rewrites the seed_* files only."""
import base64
import hashlib
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, value):
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields if v is not None)


def timestamp(seconds, nanos=0):
    return message((1, seconds), (2, nanos) if nanos else (2, None))


def base64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def write(name, seeds):
    folder = os.path.join(ROOT, name)
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        if old.startswith("seed_"):
            os.remove(os.path.join(folder, old))
    for i, data in enumerate(seeds):
        with open(os.path.join(folder, "seed_%02d" % i), "wb") as f:
            f.write(data)


def catalog_token(query, title, book_id):
    digest = hashlib.sha256(b"SearchBooks\0" + query.encode() + b"\0").hexdigest()[:16]
    raw = b"c1\0" + digest.encode() + b"\0" + title.encode() + b"\0" + book_id.encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def main():
    write("catalog_requests", [
        b"\x00" + message((1, "978-0-441-17271-9"), (2, "Dune"), (3, "Frank Herbert"), (4, 3), (5, "req-1")),
        b"\x00" + message((2, "\u00c9tudes"), (3, "Chopin"), (4, 100000)),
        b"\x01" + message((1, "b-001"), (2, "Dune Messiah")),
        b"\x01" + message((1, "b-001"), (4, "0-306-40615-2")),
        b"\x02" + message((1, "b-001"), (2, 3), (3, "req-2")),
        b"\x02" + message((1, "b-002"), (2, -2)),
        b"\x03" + message((1, "3f2a9c0b1d4e5f607182")),
        b"\x04" + message((1, "dune"), (2, 1)),
        b"\x04" + message((1, "dune"), (2, 1), (3, catalog_token("dune", "dune", "b-001"))),
        b"\x04" + message((1, "978"), (2, 200)),
    ])
    write("lending_requests", [
        b"\x00" + message((1, "b-001"), (2, "req-1")),
        b"\x00" + message((1, "3f2a9c0b1d4e5f607182")),
        b"\x01" + message((1, "0123456789abcdef0123")),
        b"\x02" + message((1, "0123456789abcdef0123")),
        b"\x03" + message((1, ""), (2, 2), (3, 10), (4, "o20")),
        b"\x0c" + message((1, "someone-else"), (2, 4), (3, 1000)),
        b"\x03" + message((1, "someone-else")),
        b"\x04" + message((1, "0123456789abcdef0123"), (2, "renew-1")),
        b"\x0d" + message((1, "3f2a9c0b1d4e5f607182")),
        # the hold methods: 5 PlaceHold, 6 CancelHold, 7 GetHold, 8 ListHolds (+9: as an admin)
        b"\x05" + message((1, "b-001"), (2, "hold-1")),
        b"\x05" + message((1, "0a1b2c3d4e5f6")),
        b"\x06" + message((1, "aaaaaaaaaaaaaaaaaaaa")),
        b"\x07" + message((1, "aaaaaaaaaaaaaaaaaaaa")),
        b"\x08" + message((3, 1), (4, 10)),
        b"\x11" + message((2, "b-001"), (4, 100)),
        b"\x11" + message((1, "ann"), (2, "b-001"), (3, 2), (5, "o20")),
    ])
    write("mypage_requests", [
        b"\x00" + message((1, "ann")),
        b"\x00",
        b"\x01" + message((1, "reader-\u00e9")),
    ])
    fine = message((1, "0123456789abcdef0123"), (2, "b-001"), (3, "Dune | late"), (4, 75), (5, 25),
                   (7, 2), (8, timestamp(1700000000)), (9, timestamp(1700300000)))
    paid_fine = message((1, "aaaaaaaaaaaaaaaaaaaa"), (2, "b-002"), (3, "Foundation"), (4, 25), (5, 25), (7, 3))
    account = message((1, "ann"), (2, 50), (3, fine), (3, paid_fine), (4, timestamp(1700400000)), (5, 500))
    write("mypage_page", [
        b"ann\nt\n1700000000123\nl:0123456789abcdef0123\n7|2|2|1700100000|0|b-001|Dune\n"
        b"l:aaaaaaaaaaaaaaaaaaaa\n3|3|4|0|0|b-002|Foundation | a title with a bar",
        b"bob\nl:x\n1|1|1|1600000000|1|b-1|",
        b"carol\nt\n-5\nl:\n18446744073709551615|2|2|9223372036854775807|1|b|t",
        b"dan\nl:0123456789abcdef0123\n7|2|2|1700100000|1|b-001|Dune\nr:0123456789abcdef0123\n"
        b"2|1702000000|1700100000\nh:aaaaaaaaaaaaaaaaaaaa\n9|1|1|1700000000|0|b-002|Foundation\n"
        b"h:bbbbbbbbbbbbbbbbbbbb\n8|2|2|1700000000|1700300000|b-001|Dune\nq:b-002\n"
        b"12|cccccccccccccccccccc|aaaaaaaaaaaaaaaaaaaa",
        b"eve\nr:x\n-1|5|5\nh:y\n1|3|4|0|0||\nh:z\n1|1|1|0|0|b|\nq:b\n1||z||z",
        # the account (lending's fines) and each loan's fine
        b"fay\nl:0123456789abcdef0123\n7|3|4|1700100000|0|b-001|Dune\na\n4|" + base64url(account) +
        b"\nf:0123456789abcdef0123\n4|75\nf:aaaaaaaaaaaaaaaaaaaa\n2|25",
        b"gus\na\n1|!!\na\n|\nf:x\n1|-5\nf:y\n18446744073709551616|1",
        # a loan retention removed leaves a mark "x:" that no page shows
        b"hal\nl:0123456789abcdef0123\n7|3|3|1702000000|0|b-001|Dune\nr:0123456789abcdef0123\n"
        b"2|1702000000|0\nx:aaaaaaaaaaaaaaaaaaaa\n1700000000123\nx:\n\nx:bbbbbbbbbbbbbbbbbbbb\nnot a time",
    ])
    loan = [(1, "0123456789abcdef0123"), (2, "ann"), (3, "b-001")]
    envelope = [(1, "loan-requested-0123456789abcdef0123"), (2, timestamp(1700000000, 5)),
                (3, "0123456789abcdef0123"),
                (4, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    write("event", [
        message(*envelope, (10, message(*loan, (4, "Dune"), (5, timestamp(1700000000)), (6, timestamp(1701209600))))),
        message(*envelope, (10, message((1, "loan-1"), (2, "ann"), (3, "b-001")))),
        message(*envelope, (11, message((1, "0123456789abcdef0123"), (2, "b-001"), (3, 1)))),
        message(*envelope, (12, message((1, "0123456789abcdef0123"), (2, "b-001")))),
        message(*envelope, (13, message(*loan, (4, "Dune"), (5, timestamp(1701209600))))),
        message(*envelope, (14, message(*loan, (4, "Dune"), (5, "OUT_OF_STOCK")))),
        message(*envelope, (15, message(*loan, (4, timestamp(1700500000))))),
        message(*envelope, (15, message((1, "loan-1"), (2, "ann"), (3, "b-001")))),
        message(*envelope, (16, message((1, "0123456789abcdef0123"), (2, "b-001"), (3, 2)))),
        message(*envelope, (17, message(*loan, (4, timestamp(1701209600))))),
        message(*envelope, (20, message(*loan, (4, timestamp(1702419200)), (5, 1)))),
        message(*envelope, (21, message((1, "aaaaaaaaaaaaaaaaaaaa"), (2, "ann"), (3, "b-001"), (4, "Dune"),
                                        (5, timestamp(1700000000))))),
        message(*envelope, (22, message((1, "aaaaaaaaaaaaaaaaaaaa"), (2, "ann"), (3, "b-001"),
                                        (4, message((1, "b-001"), (2, 3), (3, "cccccccccccccccccccc"),
                                                    (3, "aaaaaaaaaaaaaaaaaaaa")))))),
        message(*envelope, (23, message((1, "aaaaaaaaaaaaaaaaaaaa"), (2, "ann"), (3, "b-001"),
                                        (4, timestamp(1700000000)), (5, timestamp(1700259200)),
                                        (6, message((1, "b-001"), (2, 4)))))),
        message(*envelope, (24, message((1, "aaaaaaaaaaaaaaaaaaaa"), (2, "ann"), (3, "b-001"),
                                        (4, "0123456789abcdef0123")))),
        message(*envelope, (25, message((1, "aaaaaaaaaaaaaaaaaaaa"), (2, "ann"), (3, "b-001")))),
        message(*envelope, (26, message((1, "aaaaaaaaaaaaaaaaaaaa"), (2, "ann"), (3, "b-001"),
                                        (4, message((1, "b-001"), (2, 5), (3, "bad|id")))))),
        message(*envelope, (27, message((1, "aaaaaaaaaaaaaaaaaaaa"), (2, "ann"), (3, "b-001"),
                                        (4, message((1, "b-001"), (2, 6)))))),
        # the catalog's hold rules run on a book whose queue is w-first, w-second, with
        # r-ready READY and s-done settled (fuzz_event.c, book_with_holds)
        message(*envelope, (21, message((1, "w-first"), (2, "first-user"), (3, "b-001"),
                                        (5, timestamp(0, 1000000))))),
        message(*envelope, (21, message((1, "r-ready"), (2, "ready-user"), (3, "b-001")))),
        message(*envelope, (21, message((1, "s-done"), (2, "bob"), (3, "b-001"), (5, timestamp(1))))),
        message(*envelope, (21, message((1, "w-between"), (2, "cho"), (3, "b-001"), (5, timestamp(1, 500000000))))),
        message(*envelope, (25, message((1, "r-ready"), (2, "ready-user"), (3, "b-001")))),
        message(*envelope, (25, message((1, "w-first"), (2, "first-user"), (3, "b-001")))),
        message(*envelope, (22, message((1, "w-late"), (2, "dan"), (3, "b-001"),
                                        (4, message((1, "b-001"), (2, 8), (3, "x-1"), (3, "w-late"), (3, "x-1"),
                                                    (3, "r-ready")))))),
        # the account events: FineAssessed, FinePaid, FineWaived with their AccountSnapshot,
        # one of a loan the snapshot does not list, one of another user's account
        message(*envelope, (28, message((1, "ann"), (2, "0123456789abcdef0123"), (3, 75), (4, 1),
                                        (5, message((1, 4), (2, account)))))),
        message(*envelope, (29, message((1, "ann"), (2, 25), (3, message((1, 5), (2, account)))))),
        message(*envelope, (30, message((1, "ann"), (2, "aaaaaaaaaaaaaaaaaaaa"), (3, 25), (4, "first time"),
                                        (5, message((1, 6), (2, account)))))),
        message(*envelope, (28, message((1, "ann"), (2, "bbbbbbbbbbbbbbbbbbbb"), (3, 25),
                                        (5, message((1, 18446744073709551615), (2, account)))))),
        message(*envelope, (29, message((1, "bob"), (2, 25), (3, message((1, 1), (2, account)))))),
    ])
    claims = ('{"sub":"ann","iss":"fuzz-issuer","aud":"fuzz-audience","exp":4102444800,'
              '"nbf":1600000000,"role":"admin"}')
    write("auth", [
        b"\x01" + b'{"alg":"ES256","typ":"JWT"}\n' + claims.encode(),
        b"\x02" + b'{"alg":"RS256","typ":"JWT"}\n' + claims.encode(),
        b"\x03" + b'{"alg":"HS256","typ":"JWT"}\n' + claims.encode(),
        b"\x01" + b'{"alg":"ES256"}\n{"sub":"bob","iss":"fuzz-issuer","aud":["x","fuzz-audience"],"exp":4102444800}',
        b"\x01" + b'{"alg":"none"}\n' + claims.encode(),
        b"\x01" + b'{"alg":"ES256","alg":"HS256"}\n' + claims.encode(),
        b"\x00" + b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbm4ifQ.",
        b"\x00" + b"bearer   a.b.c",
    ])
    write("page_token", [
        b"dune\0" + catalog_token("dune", "dune", "b-001").encode(),
        b"\0" + catalog_token("", "the left hand of darkness", "b-004").encode(),
        b"dune\0o20",
        b"x\0AAAA",
    ])
    write("config", [b"14d", b"500ms", b"-9223372036854775808", b"50051", b"yes", b"warning",
                     b"9223372036854775807d", b"\x01\"\\long-value-" + b"x" * 80])
    write("text", [b"plain ascii", "\u00e9t\u00e9 \u6f22\u5b57 \U0001f4da".encode(),
                   b"\xed\xa0\x80", b"\xc0\xaf", b"SGVsbG8td29ybGQ", b"AQID_-8"])


if __name__ == "__main__":
    main()
