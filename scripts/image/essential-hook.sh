#!/bin/sh
# mmdebstrap --essential-hook: runs before any package beyond the essential set installs.
# $1 is the root being built.
# - policy-rc.d refuses every service start, so no package script starts a daemon in the build;
# - no default "main" PostgreSQL cluster: Patroni creates the only one, on the data volume.
set -eu
root=$1
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/etc/postgresql-common"
echo "create_main_cluster = false" > "$root/etc/postgresql-common/createcluster.conf"
