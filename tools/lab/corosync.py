"""Corosync configuration for the lab's guests and parsing of its quorum state."""
from dataclasses import dataclass


def config(cluster_name, nodes, node, keyfile, logfile, token_ms):
    """corosync.conf text for NODE; NODES is [(nodeid, name, addr)].

    Only the log file differs per node. One option per line: the parser
    wants that. token 3000 is too tight under TCG (LAB-NOTES): 5000-10000.
    """
    lines = [
        "totem {",
        "    version: 2",
        f"    cluster_name: {cluster_name}",
        "    transport: knet",
        "    crypto_cipher: aes256",
        "    crypto_hash: sha256",
        f"    keyfile: {keyfile}",
        f"    token: {token_ms}",
        "}",
        "nodelist {",
    ]
    for nodeid, name, addr in nodes:
        lines += ["    node {", f"        nodeid: {nodeid}", f"        name: {name}",
                  f"        ring0_addr: {addr}", "    }"]
    lines += ["}", "quorum {", "    provider: corosync_votequorum"]
    if len(nodes) == 2:
        lines.append("    two_node: 1")
    lines += ["}", "logging {", "    to_stderr: no", "    to_syslog: no",
              "    to_logfile: yes", f"    logfile: {logfile}", "    timestamp: on", "}"]
    return "\n".join(lines) + "\n"


@dataclass
class Quorum:
    quorate: bool
    members: list  # node ids, sorted


def parse_quorumtool(text):
    """Parse `corosync-quorumtool -s`; None if the output is not a status."""
    quorate = None
    members = []
    in_members = False
    for line in text.splitlines():
        fields = line.split()
        if line.startswith("Quorate:"):
            quorate = fields[1] == "Yes"
        elif fields[:2] == ["Nodeid", "Votes"]:
            in_members = True
        elif in_members and fields and fields[0].isdigit():
            members.append(int(fields[0]))
    if quorate is None:
        return None
    return Quorum(quorate, sorted(members))
