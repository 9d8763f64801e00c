#!/usr/bin/with-contenv bashio
# shellcheck shell=bash
# Write the edge node's configuration from the add-on's options, then run the node.
# The conversion and every check are in `fltrust-edge addon-config`.

readonly CONFIG_FILE=/data/fltrust-edge.toml

# Passed in the environment rather than as arguments, because a command line
# is visible to every process in the container.
if bashio::services.available "mqtt"; then
    FLTRUST_MQTT_HOST=$(bashio::services "mqtt" "host")
    FLTRUST_MQTT_PORT=$(bashio::services "mqtt" "port")
    FLTRUST_MQTT_USERNAME=$(bashio::services "mqtt" "username")
    FLTRUST_MQTT_PASSWORD=$(bashio::services "mqtt" "password")
    FLTRUST_MQTT_SSL=$(bashio::services "mqtt" "ssl")
    export FLTRUST_MQTT_HOST FLTRUST_MQTT_PORT FLTRUST_MQTT_USERNAME FLTRUST_MQTT_PASSWORD \
        FLTRUST_MQTT_SSL
else
    bashio::log.info "The Supervisor offers no MQTT service, so the broker must be set in mqtt_host"
fi

fltrust-edge addon-config --options /data/options.json --out "${CONFIG_FILE}" \
    --state-dir /data/state \
    || bashio::exit.nok "Invalid options: fix the option named above and restart the add-on"

log_level=$(bashio::config "log_level")
exec fltrust-edge run --config "${CONFIG_FILE}" --log-level "${log_level^^}"
