# Source this file (bash) to get a shell with the built workspace and loopback-only DDS:
#   . scripts/ros_env.sh
# It activates the venv (when present), sources install/setup.bash, and sets the DDS settings of
# DESIGN §6: discovery on localhost only, the project's Fast DDS profile (UDP on 127.0.0.1 only, large
# shared-memory segment), and a ROS_DOMAIN_ID of its own unless one is set.
_molmoact_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_molmoact_venv="${MOLMOACT_VENV:-$_molmoact_root/.venv}"
if [ -f "$_molmoact_venv/bin/activate" ] && [ -z "${ROS_DISTRO:-}" ]; then
  # shellcheck disable=SC1091
  . "$_molmoact_venv/bin/activate"
fi
if [ -f "$_molmoact_root/install/setup.bash" ]; then
  # ROS setup scripts read unset variables: relax nounset while sourcing them.
  case $- in *u*) _molmoact_nounset=1; set +u;; *) _molmoact_nounset=0;; esac
  # shellcheck disable=SC1091
  . "$_molmoact_root/install/setup.bash"
  [ "$_molmoact_nounset" = 1 ] && set -u
fi
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$_molmoact_root/config/dds/fastdds_localhost.xml"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 1 + $$ % 101 ))}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$_molmoact_root/log/ros}"
unset ROS_LOCALHOST_ONLY
unset _molmoact_root _molmoact_venv _molmoact_nounset
