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

# The daemon core. The coordinator service (daemon/coordinator) is linked
# when it is part of the build; otherwise a stub that refuses to serve.
set(CSVD_CORE_SOURCES core/auth.cc core/blockdev.cc core/config.cc core/corosync.cc
    core/daemon.cc core/kernel.cc core/peer.cc)
option(CSVD_STUB_COORDINATOR "Link csvd with a stub coordinator service" OFF)
if(CSVD_STUB_COORDINATOR OR NOT TARGET csv_coordinator)
  set(CSVD_USE_STUB ON)
endif()
if(CSVD_USE_STUB)
  list(APPEND CSVD_CORE_SOURCES core/coordinator_stub.cc)
endif()
add_library(csvd_core STATIC ${CSVD_CORE_SOURCES})
target_include_directories(csvd_core PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(csvd_core PUBLIC BOOST_ASIO_NO_DEPRECATED)
# GCC 12 at -O2 reports a false -Wmismatched-new-delete inside Asio's
# coroutine frames (awaitable_frame_base's sized operator delete).
target_compile_options(csvd_core PUBLIC $<$<CXX_COMPILER_ID:GNU>:-Wno-mismatched-new-delete>)
target_link_libraries(csvd_core PUBLIC csv_state csv_abi PkgConfig::COROSYNC PkgConfig::BLKID
                      OpenSSL::Crypto Boost::headers nlohmann_json::nlohmann_json
                      Threads::Threads)
if(NOT CSVD_USE_STUB)
  target_link_libraries(csvd_core PUBLIC csv_coordinator)
endif()

add_executable(csvd main.cc)
target_link_libraries(csvd PRIVATE csvd_core)
