# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Firewall rules applied per second.

A running VM (one NIC) in a network namespace of the benchmark's own gets a VM rule set of
N rules (N = 10, 100, 1000), changed every round so that each apply rewrites all of them in
one nftables transaction, through FirewallService.ensure (store, read of the kernel, plan,
apply). Reported per N: the median apply time and rules/s (every rule in the transaction,
generated ones included), the median no-change rerun (no nft write), and the baseline: a
raw ``nft -j -f -`` of the same JSON document, measured in the same run.

    .venv/bin/python bench/firewall_apply.py [--rounds 9] [--sizes 10,100,1000] [--db-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests")]

from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

from ansible_collections.infinivirt.core.plugins.module_utils.firewall import nftables as nft  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.service import FirewallService  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import NicSpec  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord, firewall_vm  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec  # noqa: E402


class RecordingNft(nft.Nft):
    """The real runner; keeps the last document it applied for the baseline."""

    last = None

    def apply(self, ops, netns, check=False):
        self.last = ops
        super().apply(ops, netns, check)


def rules(count, round_no):
    """count rules; the round number moves every port, so each apply rewrites them all."""
    found = []
    for index in range(count):
        found.append(
            {
                "direction": "in" if index % 2 else "out",
                "protocol": "tcp" if index % 3 else "udp",
                "ports": [str(1024 + (index * 7 + round_no) % 60000)],
                "cidr": "10.%d.%d.0/24" % (index // 250, index % 250),
                "action": "drop" if index % 5 == 0 else "accept",
                "comment": "bench %d" % index,
            }
        )
    return found


def measure(fw, netns, count, rounds):
    params = {"scope": "vm", "name": "bench", "policy_in": "drop"}
    applies, reruns, raws, sizes = [], [], [], []
    for round_no in range(rounds):
        wanted = dict(params, rules=rules(count, round_no))
        t0 = time.perf_counter()
        done = fw.ensure(wanted, False)
        applies.append(time.perf_counter() - t0)
        assert done["changed"] and done["rules_applied"] >= count, done["kernel_changes"]
        sizes.append(done["rules_applied"])
        writes = fw.nft.writes
        t0 = time.perf_counter()
        again = fw.ensure(wanted, False)
        reruns.append(time.perf_counter() - t0)
        assert not again["changed"] and fw.nft.writes == writes
        document = json.dumps(nft.document(fw.nft.last))
        t0 = time.perf_counter()
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "-j", "-f", "-"],
            input=document,
            text=True,
            check=True,
            capture_output=True,
        )
        raws.append(time.perf_counter() - t0)
    apply_s, rerun_s, raw_s = statistics.median(applies), statistics.median(reruns), statistics.median(raws)
    size = statistics.median(sizes)
    return {
        "user_rules": count,
        "rules_in_transaction": size,
        "rounds": rounds,
        "apply_median_s": round(apply_s, 4),
        "rules_per_s": round(size / apply_s),
        "rerun_median_s": round(rerun_s, 4),
        "raw_nft_median_s": round(raw_s, 4),
        "raw_rules_per_s": round(size / raw_s),
        "apply_vs_raw": round(apply_s / raw_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--db-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="iv-benchfw")
    netns = "ivbench-%s" % uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", netns], check=True)
    store = open_store(args.db_url or "sqlite:///%s/bench.db" % work, job_id="bench")
    results = []
    try:
        spec = VmSpec(
            name="bench", nics=(NicSpec(bridge="br0", mac="52:54:00:be:0c:01", ips=("10.0.0.5",)),), netns=netns
        )
        rec = VmRecord(
            uuid=str(uuid.uuid4()), name="bench", host="bench-host", status="running", spec=spec, running_spec=spec
        )
        records.insert(store, rec)
        fw = FirewallService(store, "bench-host", records.firewall_directory(store), runner=RecordingNft())
        for count in (int(n) for n in args.sizes.split(",")):
            results.append(measure(fw, netns, count, args.rounds))
        fw.forget_vm(firewall_vm(records.load(store, "bench")))
        store.delete_vm(rec.uuid)
    finally:
        store.close()
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    for r in results:
        print(
            "N=%d (%d rules in the transaction): apply %.1f ms median = %d rules/s; raw nft -j -f %.1f ms "
            "= %d rules/s (ratio %.2f); no-change rerun %.1f ms"
            % (
                r["user_rules"],
                r["rules_in_transaction"],
                r["apply_median_s"] * 1000,
                r["rules_per_s"],
                r["raw_nft_median_s"] * 1000,
                r["raw_rules_per_s"],
                r["apply_vs_raw"],
                r["rerun_median_s"] * 1000,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
