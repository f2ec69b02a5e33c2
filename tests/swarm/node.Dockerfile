# A Swarm test node (and the test registry): Debian's docker.io and docker-registry on dockertask's
# default image (Debian, whatever it was built from), so it builds with no registry reachable.
# Legacy iptables: nf_tables is not usable inside a nested container here.
ARG BASE
FROM ${BASE}
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        docker.io iptables iproute2 docker-registry ca-certificates \
 && update-alternatives --set iptables /usr/sbin/iptables-legacy \
 && update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy \
 && rm -rf /var/lib/apt/lists/*
COPY registry.yml /etc/dockertask/registry.yml
COPY node-entrypoint.sh /usr/local/bin/node-entrypoint.sh
ENTRYPOINT ["/bin/sh", "/usr/local/bin/node-entrypoint.sh"]
