# csvd: the daemon core (daemon/core), its unit tests, and the executable.
# Included from daemon/CMakeLists.txt.

pkg_check_modules(COROSYNC REQUIRED IMPORTED_TARGET libcpg libquorum libvotequorum)
pkg_check_modules(BLKID REQUIRED IMPORTED_TARGET blkid)
find_package(OpenSSL REQUIRED)
find_package(Boost 1.81 REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(Threads REQUIRED)

# The pure parts: election, replicated state and its wire format, logging.
add_library(csv_state STATIC core/election.cc core/state.cc core/log.cc)
target_include_directories(csv_state PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})

add_executable(core_test core/election_test.cc core/state_test.cc)
target_link_libraries(core_test PRIVATE csv_state GTest::gtest_main)
gtest_discover_tests(core_test)
