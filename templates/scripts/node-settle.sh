# shellcheck shell=bash
# A part of a node script: scale-lib (templates/scripts/scale-lib.sh.hbs) comes before it, with the
# values and functions it uses.

# ================================================================ node-settle
# After this node came back (a resize, a reboot): waits until it is a full member again, so the
# next node may go down.
settle_node
