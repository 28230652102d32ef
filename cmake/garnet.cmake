# Helpers shared by every part's CMakeLists.

# garnet_add_subdirs(<dir>...): add each subdirectory that has a CMakeLists.txt, so parts can be
# added without touching their parent.
function(garnet_add_subdirs)
  foreach(d ${ARGN})
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${d}/CMakeLists.txt)
      add_subdirectory(${d})
    endif()
  endforeach()
endfunction()

# garnet_test(<name> SOURCES <src>... LIBS <lib>... [LABELS <label>...])
# A GoogleTest binary whose tests ctest lists one by one (discovered when ctest runs).
function(garnet_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main Threads::Threads)
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${T_LABELS}" ENVIRONMENT "GARNET_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()
