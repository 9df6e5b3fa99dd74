#!/usr/bin/env python3
"""A small dex client using only Python's standard library.

    client.py [--url URL] [--key KEY] run [--wait] [--stdin TEXT] FILE|-
    client.py [--url URL] [--key KEY] status EXECUTION_ID
    client.py [--url URL] [--key KEY] result EXECUTION_ID

The key comes from --key or $DEX_API_KEY, the URL from --url or $DEX_URL
(default http://127.0.0.1:8080). `run` submits the script; with --wait it
polls until the run ends and prints the result, then exits with the
script's exit code. Other answers are printed as JSON. An error answer
(application/problem+json) is printed to stderr with exit code 1.
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


class DexError(Exception):
    def __init__(self, status, problem):
        super().__init__(f"HTTP {status}: {problem.get('code')}: "
                         f"{problem.get('detail')}")
        self.status = status
        self.problem = problem


class Client:
    def __init__(self, url, key, timeout=60):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data,
                                         method=method)
        request.add_header("Authorization", "Bearer " + self.key)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            try:
                problem = json.load(e)
            except ValueError:
                problem = {"code": "http_error", "detail": str(e)}
            raise DexError(e.code, problem) from None

    def run(self, script, stdin=None):
        body = {"script": script}
        if stdin is not None:
            body["stdin"] = stdin
        return self._call("POST", "/run", body)[1]

    def status(self, execution_id):
        return self._call("GET", "/status/" + execution_id)[1]

    def result(self, execution_id):
        return self._call("GET", "/result/" + execution_id)[1]

    def wait(self, execution_id, poll_s=0.2, timeout_s=300):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.status(execution_id)["status"] in ("completed", "failed"):
                return self.result(execution_id)
            time.sleep(poll_s)
        raise TimeoutError(f"{execution_id} did not finish in {timeout_s} s")


def main(argv):
    parser = argparse.ArgumentParser(description="A small dex client.")
    parser.add_argument("--url", default=os.environ.get(
        "DEX_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--key", default=os.environ.get("DEX_API_KEY"))
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="submit a script")
    run.add_argument("--wait", action="store_true",
                     help="wait for the run and print its result")
    run.add_argument("--stdin", help="text given to the script on stdin")
    run.add_argument("file", help="the script, or - for standard input")
    for name in ("status", "result"):
        commands.add_parser(name).add_argument("execution_id")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set DEX_API_KEY")

    client = Client(args.url, args.key)
    try:
        if args.command == "run":
            if args.file == "-":
                script = sys.stdin.read()
            else:
                with open(args.file, encoding="utf-8") as f:
                    script = f.read()
            queued = client.run(script, args.stdin)
            if not args.wait:
                print(json.dumps(queued))
                return 0
            result = client.wait(queued["execution_id"])
            sys.stdout.write(result["stdout"])
            sys.stderr.write(result["stderr"])
            if result["status"] == "failed":
                print(f"client: run failed: {result.get('detail')}",
                      file=sys.stderr)
                return 1
            return result["exit_code"]
        answer = getattr(client, args.command)(args.execution_id)
        print(json.dumps(answer))
        return 0
    except DexError as e:
        print(f"client: {e}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        print(f"client: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
