#!/bin/sh
# Copies the service's configuration into place (a stand-in for kolla_set_configs).
echo "configuring $(cat /run_command 2>/dev/null)"
