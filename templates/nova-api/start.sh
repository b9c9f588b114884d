#!/bin/sh
# Starts nova-api the way kolla_start does: configure, then exec the command.
/usr/local/bin/kolla_set_configs
exec $(cat /run_command)
